//! `mlflow-operator run`: wires the controller, the webhook, metrics and health together.

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("run is not wired yet")
}
