//! The command line. `run` holds the controller, webhook, metrics and health ([`crate::run`]),
//! logging as [`logging`] sets up; `crd` prints the CRD; `inject` previews the webhook offline
//! ([`inject`]); `check` and `explain` read the live install; `completion` prints shell
//! completions ([`completion`]); `version` prints what the binary was built from ([`version`]).

pub mod check;
mod checklist;
mod cluster;
pub mod completion;
pub mod explain;
pub mod inject;
pub mod logging;
pub mod version;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "mlflow-operator",
    version,
    about = "Makes training pods log to MLflow with one label"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (leader only), the admission webhook, metrics and health endpoints.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Print the MlflowWorkspaceBinding CRD as YAML (crds/ is generated from it).
    Crd,
    /// Print workloads with their pods mutated exactly as the webhook would (offline preview).
    #[command(after_help = INJECT_EXAMPLES)]
    Inject(InjectArgs),
    /// Check the live install: CRD, webhook, operator pods, Lease, an end-to-end dry-run
    /// admission, bindings, and pods that are stale or not injected; a fix for each failure.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Explain why a pod (or the pods of a workload) is or is not tracking, from the real webhook.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(ExplainArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
    /// Print the version, git commit and build date.
    #[command(after_help = VERSION_EXAMPLES)]
    Version(VersionArgs),
}

// Every line of these that starts with `  mlflow-operator` must parse (tests::examples_parse).
const RUN_EXAMPLES: &str = "\
Examples:
  # In the cluster: a webhook certificate the operator makes and rotates itself, JSON logs
  mlflow-operator run --self-signed --log-format json
  # The controller alone, from a workstation, with the current kubeconfig context's cluster
  mlflow-operator run --no-webhook --kubeconfig ~/.kube/config --namespace mlflow-operator";

const INJECT_EXAMPLES: &str = "\
Examples:
  # What the webhook would add to a Job's pods, with a binding as the cluster has it
  kubectl get mwb databricks -n team-a -o yaml > binding.yaml
  mlflow-operator inject --binding binding.yaml -f examples/workloads/job.yaml
  # A rendered chart from stdin, with its pods' ServiceAccount (workload identity)
  helm template ./training | mlflow-operator inject --binding binding.yaml --service-account sa.yaml";

const CHECK_EXAMPLES: &str = "\
Examples:
  mlflow-operator check
  mlflow-operator check -n team-a -o json";

const EXPLAIN_EXAMPLES: &str = "\
Examples:
  mlflow-operator explain -n team-a pod/train-0
  mlflow-operator explain -n team-a deployment/trainer -o json";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  source <(mlflow-operator completion bash)            # bash, this shell; ~/.bashrc for all
  mlflow-operator completion zsh > \"${fpath[1]}/_mlflow-operator\"
  mlflow-operator completion fish > ~/.config/fish/completions/mlflow-operator.fish
  mlflow-operator completion powershell | Out-String | Invoke-Expression";

const VERSION_EXAMPLES: &str = "\
Examples:
  mlflow-operator version
  mlflow-operator version -o json";

#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: completion::Shell,
}

#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `-o text|json`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Kubeconfig to use; default: KUBECONFIG / ~/.kube/config, else in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Check the bindings and pods of this namespace only (and send the probe pod there).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Kubeconfig to use; default: KUBECONFIG / ~/.kube/config, else in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the object.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,

    /// KIND/NAME: pod/x, deployment/x, statefulset/x, daemonset/x, replicaset/x, job/x,
    /// cronjob/x, or any kind with a pod template at spec.template.
    pub object: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnMissingBindingArg {
    /// Refuse opted-in pods no Ready binding applies to.
    #[default]
    Refuse,
    /// Admit them unchanged, with a warning.
    Allow,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kubeconfig to use; default: in-cluster config, else KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The operator's own namespace (Lease, certificate Secret).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mlflow-operator")]
    pub namespace: String,

    /// This replica's identity for leader election.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The operator's own ServiceAccount (in --namespace). It owns the certificate Secret and
    /// the Lease the operator creates, so deleting it (helm uninstall) removes them too.
    #[arg(long, env = "POD_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// HTTPS address of the admission webhook (/mutate).
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,

    /// Serving certificate (PEM) for the webhook; reloaded when the file (or the Secret volume's
    /// ..data symlink) changes. With --tls-key-file; exclusive with --self-signed.
    #[arg(long, requires = "tls_key_file", conflicts_with = "self_signed")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of the serving certificate.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Generate and rotate a CA and serving certificate, keep them in --cert-secret, and keep the
    /// caBundle of --webhook-config current.
    #[arg(long)]
    pub self_signed: bool,

    /// Secret (in --namespace) that holds the self-managed CA and serving certificate.
    #[arg(long, default_value = "mlflow-operator-webhook-cert")]
    pub cert_secret: String,

    /// MutatingWebhookConfiguration whose caBundle the self-managed mode keeps current.
    #[arg(long, default_value = "mlflow-operator")]
    pub webhook_config: String,

    /// DNS names (and IPs) for the self-managed serving certificate; default: the Service's names.
    #[arg(long, value_delimiter = ',')]
    pub cert_dns_names: Vec<String>,

    /// How often the self-managed certificate Secret is read: how soon a rotation, or a
    /// certificate written into the Secret, is served and its CA put in the caBundle.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub cert_check_interval: Duration,

    /// With --self-signed: address of a second HTTPS listener through which, when the CA
    /// changes, the API server proves it trusts the new CA before the webhook serves it (a
    /// canary webhook on this port of the webhook's Service or URL). Unset: a fixed 5 s wait.
    #[arg(long, requires = "self_signed")]
    pub ca_probe_addr: Option<SocketAddr>,

    /// How long a replica waits for the CA probe's evidence before it serves a new CA's
    /// certificate anyway (with an error). The old CA stays in the caBundle for two
    /// --cert-check-interval plus this.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub ca_probe_timeout: Duration,

    /// Service name the webhook is reached through (for the default certificate names).
    #[arg(long, default_value = "mlflow-operator-webhook")]
    pub service_name: String,

    /// What to do with opted-in pods that no Ready binding applies to.
    #[arg(long, value_enum, default_value_t = OnMissingBindingArg::Refuse)]
    pub on_missing_binding: OnMissingBindingArg,

    /// Tenant for workload identity when neither the binding nor the ServiceAccount names one.
    #[arg(long, env = "MLFLOW_OPERATOR_DEFAULT_TENANT_ID")]
    pub default_tenant_id: Option<String>,

    /// Override the Azure Resource Manager endpoint of every cloud (sovereign clouds, tests).
    #[arg(long, env = "MLFLOW_OPERATOR_ARM_ENDPOINT")]
    pub arm_endpoint: Option<String>,

    /// Override the Entra ID authority host (also read from AZURE_AUTHORITY_HOST).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,

    /// Extra CA certificate (PEM) trusted for Azure endpoints (private proxies, tests).
    #[arg(long, env = "MLFLOW_OPERATOR_AZURE_CA_FILE")]
    pub azure_ca_file: Option<PathBuf>,

    /// How often each Azure ML workspace's tracking URI is re-resolved.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub refresh_interval: Duration,

    /// How soon a binding whose workspace could not be resolved is tried again (at most the
    /// refresh interval): how long a fixed role assignment or an ARM outage that ended takes to
    /// show.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub error_retry: Duration,

    /// Lease used for leader election of the controller.
    #[arg(long, default_value = "mlflow-operator-controller")]
    pub lease_name: String,

    /// Lease duration; a dead leader is replaced after about this long.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub lease_duration: Duration,

    /// Reconcile only the bindings of this namespace (default: all namespaces).
    #[arg(long, env = "MLFLOW_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Upgrade the cluster's MlflowWorkspaceBinding CRD to this release's at start when it is of
    /// an earlier revision (never to a lower one); needs get and patch on the CRD. Without it the
    /// CRD is only checked. Either way, until the CRD has every field this release writes, the
    /// replica reports not ready and its controller waits.
    #[arg(long)]
    pub upgrade_crd: bool,

    /// Do not run the controller (webhook only).
    #[arg(long)]
    pub no_controller: bool,

    /// Do not run the webhook (controller only).
    #[arg(long)]
    pub no_webhook: bool,

    /// On SIGTERM, how long the webhook goes on answering while `/readyz` reports it stopping,
    /// before it stops accepting connections and drains: time for the readiness probe to fail
    /// and for kube-proxy and the API server to send admissions elsewhere. A second SIGTERM or
    /// Ctrl-C cuts it short.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub shutdown_delay: Duration,

    /// Log lines as text, or as one JSON object a line for log pipelines. RUST_LOG filters both.
    #[arg(long, value_enum, env = "MLFLOW_OPERATOR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// The MlflowWorkspaceBinding (YAML) carrying status.trackingUri or spec.trackingUri.
    #[arg(long)]
    pub binding: PathBuf,

    /// The pods' ServiceAccount (YAML), for its azure.workload.identity annotations.
    #[arg(long)]
    pub service_account: Option<PathBuf>,

    /// Multi-document YAML to mutate; '-' reads stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub filename: PathBuf,

    /// Tenant for workload identity when neither the binding nor the ServiceAccount names one.
    #[arg(long, env = "MLFLOW_OPERATOR_DEFAULT_TENANT_ID")]
    pub default_tenant_id: Option<String>,
}

/// Parses `90s`, `5m`, `1h`, `250ms` (jiff's friendly format, so `1h 30m` too) or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unreadable = || format!("'{s}' is not a duration like 30s, 5m or 1h");
    // Plain seconds are this command line's own shorthand; jiff wants a unit.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| unreadable());
    }
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{}: {e}", unreadable()))?;
    Duration::try_from(d).map_err(|_| format!("'{s}' is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (input, want) in [
            ("30", Some(Duration::from_secs(30))),
            ("30s", Some(Duration::from_secs(30))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("250ms", Some(Duration::from_millis(250))),
            ("1h 30m", Some(Duration::from_secs(5400))),
            ("18446744073709551615", Some(Duration::from_secs(u64::MAX))),
            ("5x", None),
            ("m", None),
            ("", None),
            ("-5m", None),
            // Overflowed a u64 of seconds when multiplied out: a panic, not an error, before.
            ("307445734561825861m", None),
            ("5124095576030432h", None),
            ("18446744073709551616", None),
        ] {
            assert_eq!(parse_duration(input).ok(), want, "{input}");
        }
    }

    #[test]
    fn log_formats() {
        for (flags, want) in [
            (&[][..], Some(LogFormat::Text)),
            (&["--log-format=text"], Some(LogFormat::Text)),
            (&["--log-format", "json"], Some(LogFormat::Json)),
            (&["--log-format=json", "--log-format=text"], None),
            (&["--log-format=JSON"], None),
            (&["--log-format=logfmt"], None),
            (&["--log-format="], None),
            (&["--log-format"], None),
        ] {
            let args = ["mlflow-operator", "run"].iter().chain(flags);
            let got = Cli::try_parse_from(args).ok().map(|cli| match cli.command {
                Command::Run(run) => run.log_format,
                other => panic!("{flags:?} parsed as {other:?}"),
            });
            assert_eq!(got, want, "{flags:?}");
        }
    }

    /// The `mlflow-operator ...` invocations of an examples text, up to a pipe, redirection,
    /// closing parenthesis or comment.
    fn invocations(examples: &str) -> Vec<Vec<&str>> {
        let commands = examples
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'));
        let from_ours = commands.filter_map(|l| l.find("mlflow-operator ").map(|at| &l[at..]));
        from_ours
            .map(|c| c.split(['|', '>', ')', '#']).next().unwrap_or(c))
            .map(|c| c.split_whitespace().collect())
            .collect()
    }

    #[test]
    fn examples_parse() {
        for examples in [
            RUN_EXAMPLES,
            INJECT_EXAMPLES,
            CHECK_EXAMPLES,
            EXPLAIN_EXAMPLES,
            COMPLETION_EXAMPLES,
            VERSION_EXAMPLES,
        ] {
            let invocations = invocations(examples);
            assert!(invocations.len() >= 2, "{examples}");
            for args in invocations {
                if let Err(e) = Cli::try_parse_from(&args) {
                    panic!("{args:?}: {e}");
                }
            }
        }
    }
}
