//! Load generator: AdmissionReviews replayed over HTTPS on loopback, as the kube-apiserver
//! sends them, against five servers in the same run: ours (the real `mlflow-operator run`
//! binary), the floor (a fixed answer on the same TLS and HTTP stack), the reading floor (the
//! floor that also validates the whole request as JSON: the least a webhook that reads the pod
//! pays), the answering floor (the reading floor sending ours' patch for each payload: the
//! least a webhook that reads the pod and sends that answer pays) and
//! azure-workload-identity's webhook (when its binary is given). Prints Markdown tables to stdout
//! and one line per run (with the hypervisor steal during it) to stderr.
//!
//! It needs a kube-apiserver (both webhooks cache ServiceAccounts and ours bindings): run it
//! inside the test cluster.
//!
//!   tests/cluster/exec cargo bench --bench load -- [--quick] [--rounds N] [--azwi PATH]
//!
//! Under `cargo test` (no `--bench` argument) it runs the quick mode: every number produced and
//! every answer checked, the timings meaningless.

mod client;
mod cluster;
#[path = "../support/floor.rs"]
mod floor;
mod goals;
mod payloads;
mod procfs;
mod report;
mod rounds;
mod runs;
mod servers;
#[path = "../support/spread.rs"]
mod spread;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Admission load generator: ours, the floor and azwi side by side")]
pub struct Config {
    /// A run of under a minute that checks the harness, not the timings.
    #[arg(long)]
    quick: bool,
    /// Rounds; every figure is the median over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each saturation run.
    #[arg(long, default_value_t = 2.0)]
    saturate_secs: f64,
    /// Seconds of each open-loop run.
    #[arg(long, default_value_t = 4.0)]
    rate_secs: f64,
    /// Connections the open-loop runs spread their reviews over.
    #[arg(long, default_value_t = 16)]
    open_connections: usize,
    /// azure-workload-identity's webhook binary; without it azwi is skipped.
    #[arg(long, env = "MLFLOW_OPERATOR_AZWI_WEBHOOK")]
    azwi: Option<PathBuf>,
    /// Another build of ours to measure (before/after comparisons); default: this build's.
    #[arg(long, env = "MLFLOW_OPERATOR_LOADGEN_OURS")]
    ours: Option<PathBuf>,
    /// Client (generator) tokio worker threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Print when, within each open-loop run, reviews took over 5 ms (grouped into bursts).
    #[arg(long)]
    show_stalls: bool,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Config {
    /// How long an open-loop run waits for the reviews still queued after its last send.
    fn drain(&self) -> Duration {
        Duration::from_secs_f64(if self.quick { 0.5 } else { 2.0 })
    }

    fn quick(mut self) -> Self {
        self.quick = true;
        self.rounds = 1;
        self.saturate_secs = 0.3;
        self.rate_secs = 0.3;
        self
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-floor") {
        return floor::main(&args[2..]);
    }
    let config = if args.iter().any(|a| a == "--bench") {
        Config::parse()
    } else {
        // `cargo test`: libtest's arguments; a name filter that does not match skips the run.
        let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
        if filter.is_some_and(|f| !"load_quick_mode".contains(f.as_str())) {
            return ExitCode::SUCCESS;
        }
        Config::parse_from(["load"]).quick()
    };
    let config = if config.quick { config.quick() } else { config };
    spread::self_check();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(rounds::run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
