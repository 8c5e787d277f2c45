use clap::Parser;
use mlflow_operator::cli::{Cli, Command};

// glibc's malloc/free took about a third of the webhook's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_)) {
        use std::io::IsTerminal;
        // Colour codes only on a terminal: pod logs and log files get plain text.
        tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,kube_runtime=warn".into()),
            )
            .init();
    }
    match cli.command {
        Command::Crd => print!("{}", mlflow_operator::crd_yaml()),
        Command::Version => println!("mlflow-operator {}", env!("CARGO_PKG_VERSION")),
        Command::Inject(args) => std::process::exit(mlflow_operator::cli::inject::run(&args)),
        Command::Check(args) => std::process::exit(mlflow_operator::cli::check::run(&args).await),
        Command::Explain(args) => {
            std::process::exit(mlflow_operator::cli::explain::run(&args).await)
        }
        Command::Run(args) => mlflow_operator::run::run(*args).await?,
    }
    Ok(())
}
