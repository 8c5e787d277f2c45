//! `mlflow-operator completion <shell>`: the shell's completion script, from clap_complete.

use clap::CommandFactory;
pub use clap_complete::Shell;

use super::Cli;

/// Writes `shell`'s completion script for the whole command line to `out`.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
}
