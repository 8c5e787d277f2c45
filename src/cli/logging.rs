//! The log output of `mlflow-operator run`: plain text, or one JSON object a line for log
//! pipelines, both filtered by RUST_LOG.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The filter when RUST_LOG is unset or unreadable: kube_runtime logs every watch retry at info.
pub const DEFAULT_FILTER: &str = "info,kube_runtime=warn";

/// `--log-format text|json`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (tracing-subscriber's format: timestamp, level, fields, target).
    Json,
}

/// Installs the global subscriber; logs go to stdout.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // Colour codes only on a terminal: pod logs and log files get plain text.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.with_ansi(false).json().init(),
    }
}
