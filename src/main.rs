use clap::Parser;
use mlflow_operator::cli::{self, Cli, Command};

// glibc's malloc/free took about a third of the webhook's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mlflow_operator::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", mlflow_operator::crd_yaml()),
        Command::Version(args) => print!(
            "{}",
            cli::version::render(&cli::version::BUILD, args.output)
        ),
        Command::Completion(args) => cli::completion::write(args.shell, &mut std::io::stdout()),
        Command::Inject(args) => std::process::exit(cli::inject::run(&args)),
        Command::Check(args) => std::process::exit(cli::check::run(&args).await),
        Command::Explain(args) => std::process::exit(cli::explain::run(&args).await),
        Command::Run(args) => {
            cli::logging::init(args.log_format);
            mlflow_operator::run::run(*args).await?
        }
    }
    Ok(())
}
