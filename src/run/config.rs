//! Everything `mlflow-operator run` is configured with, built once from its flags and the
//! process environment, so every part it starts gets plain values and the same identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::probe::{self, Probe};
use crate::certs::self_managed;
use crate::cli::{OnMissingBindingArg, RunArgs};
use crate::controller::arm::{AzureConfig, RetryPolicy};
use crate::controller::credential::AzureEnv;
use crate::controller::{self, Config};
use crate::inject::{Defaults, OnMissingBinding};

/// A binding whose spec changed accepts a cached URI only when it is younger than this.
const SPEC_CHANGE_WINDOW: Duration = Duration::from_secs(5);

pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    /// Plain-HTTP address of /metrics, /healthz and /readyz.
    pub metrics_addr: SocketAddr,
    /// This replica's identity: the Lease holder, and the reporter instance of every Event.
    pub identity: String,
    /// None with --no-webhook.
    pub webhook: Option<WebhookSettings>,
    /// None with --no-controller.
    pub controller: Option<controller::Config>,
    /// The operator's ServiceAccount, owner of what it creates (--service-account).
    pub service_account: Option<String>,
}

pub struct WebhookSettings {
    pub addr: SocketAddr,
    pub certificates: Certificates,
    pub defaults: Defaults,
    /// How long it answers after SIGTERM, reported not ready, before draining.
    pub shutdown_delay: std::time::Duration,
    /// The CA probe's listener (self-managed certificates only).
    pub ca_probe_addr: Option<SocketAddr>,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug)]
pub enum Certificates {
    /// Mounted files, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated and rotated by the operator, kept in a Secret, caBundle kept current.
    SelfManaged(Box<self_managed::Config>),
}

impl Settings {
    /// The settings of `args`, with environment variables read through `var` and files through
    /// `read`. Fails when the flags cannot work together or a named file cannot be read.
    pub fn new(
        args: &RunArgs,
        var: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let identity = args
            .identity
            .clone()
            .or_else(|| var("HOSTNAME"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("mlflow-operator-{}", std::process::id()));
        let webhook = match args.no_webhook {
            true => None,
            false => Some(webhook(args, &identity, &var)?),
        };
        let controller = match args.no_controller {
            true => None,
            false => Some(controller(args, &identity, &var, &read)?),
        };
        Ok(Self {
            kubeconfig: args.kubeconfig.clone(),
            metrics_addr: args.metrics_addr,
            identity,
            webhook,
            controller,
            service_account: args.service_account.clone().filter(|s| !s.is_empty()),
        })
    }
}

fn webhook(
    args: &RunArgs,
    identity: &str,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<WebhookSettings> {
    let certificates = match (&args.tls_cert_file, &args.tls_key_file, args.self_signed) {
        (Some(cert), Some(key), false) => Certificates::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, true) => {
            let mut cfg = self_managed::Config::new(
                &args.namespace,
                &args.cert_secret,
                &args.webhook_config,
                &args.service_name,
                &args.cert_dns_names,
            );
            cfg.check_every = args.cert_check_interval;
            cfg.probe = args.ca_probe_addr.map(|addr| Probe {
                webhook_config: args.webhook_config.clone(),
                namespace: args.namespace.clone(),
                port: addr.port(),
                tag: probe::tag(identity),
                bound: args.ca_probe_timeout,
            });
            Certificates::SelfManaged(Box::new(cfg))
        }
        _ => anyhow::bail!(
            "the webhook needs a certificate: pass --tls-cert-file and --tls-key-file, or --self-signed (or --no-webhook)"
        ),
    };
    let on_missing_binding = match args.on_missing_binding {
        OnMissingBindingArg::Refuse => OnMissingBinding::Refuse,
        OnMissingBindingArg::Allow => OnMissingBinding::Allow,
    };
    let defaults = Defaults::new(args.default_tenant_id.as_deref(), on_missing_binding, var);
    Ok(WebhookSettings {
        addr: args.webhook_addr,
        certificates,
        defaults,
        shutdown_delay: args.shutdown_delay,
        ca_probe_addr: args.ca_probe_addr,
    })
}

fn controller(
    args: &RunArgs,
    identity: &str,
    var: impl Fn(&str) -> Option<String>,
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> anyhow::Result<Config> {
    let ca_pem = match &args.azure_ca_file {
        Some(path) => Some(
            read(path)
                .map_err(|e| anyhow::anyhow!("reading --azure-ca-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(Config {
        namespace: args.namespace.clone(),
        identity: identity.to_string(),
        lease_name: args.lease_name.clone(),
        lease_duration: args.lease_duration,
        refresh_interval: args.refresh_interval,
        error_retry: args.error_retry,
        spec_change_window: SPEC_CHANGE_WINDOW,
        watch_namespace: args.watch_namespace.clone().filter(|s| !s.is_empty()),
        azure: AzureConfig {
            arm_endpoint: args.arm_endpoint.clone(),
            authority_host: args.authority_host.clone(),
            ca_pem,
            env: AzureEnv::from_vars(var),
            retry: RetryPolicy::default(),
            imds_probe: Default::default(),
        },
        lease_owner: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::AzureCloud;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["mlflow-operator", "run", "--self-signed"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    /// Settings with these environment variables and no readable file.
    fn settings(args: &RunArgs, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let var = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let read = |path: &Path| -> std::io::Result<Vec<u8>> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            ))
        };
        Settings::new(args, var, read)
    }

    #[test]
    fn controller_config_from_flags() {
        let a = args(&[
            "--arm-endpoint=https://arm.example",
            "--authority-host=https://login.example/",
            "--refresh-interval=2m",
            "--error-retry=5s",
            "--lease-name=l",
            "--lease-duration=20s",
            "--identity=pod-1",
            "--namespace=ops",
        ]);
        let cfg = settings(&a, &[("AZURE_CLIENT_ID", "c")])
            .unwrap()
            .controller
            .unwrap();
        assert_eq!(cfg.refresh_interval, Duration::from_secs(120));
        assert_eq!(cfg.error_retry, Duration::from_secs(5));
        assert_eq!(cfg.lease_name, "l");
        assert_eq!(cfg.lease_duration, Duration::from_secs(20));
        assert_eq!(cfg.identity, "pod-1");
        assert_eq!(cfg.namespace, "ops");
        assert_eq!(cfg.watch_namespace, None);
        assert_eq!(
            cfg.azure.arm_endpoint(AzureCloud::AzureChinaCloud),
            "https://arm.example"
        );
        assert_eq!(
            cfg.azure.authority_host(AzureCloud::AzureUSGovernment),
            "https://login.example/"
        );
        assert_eq!(cfg.azure.env.client_id.as_deref(), Some("c"));
    }

    #[test]
    fn one_identity_for_the_lease_and_every_event() {
        let pid = format!("mlflow-operator-{}", std::process::id());
        for (flags, vars, want) in [
            (
                vec!["--identity=pod-1"],
                vec![("HOSTNAME", "host")],
                "pod-1",
            ),
            (vec![], vec![("HOSTNAME", "host")], "host"),
            (vec![], vec![("HOSTNAME", "")], pid.as_str()),
            (vec![], vec![], pid.as_str()),
        ] {
            let s = settings(&args(&flags), &vars).unwrap();
            assert_eq!(s.identity, want, "{flags:?} {vars:?}");
            assert_eq!(s.controller.unwrap().identity, want);
        }
    }

    #[test]
    fn webhook_settings_from_flags_and_environment() {
        let s = settings(
            &args(&["--on-missing-binding=allow"]),
            &[("AZURE_TENANT_ID", "t")],
        )
        .unwrap();
        let w = s.webhook.unwrap();
        assert_eq!(w.defaults.tenant_id.as_deref(), Some("t"));
        assert_eq!(w.defaults.on_missing_binding, OnMissingBinding::Allow);
        assert!(matches!(w.certificates, Certificates::SelfManaged(_)));
        let s = settings(&args(&["--cert-check-interval=2s"]), &[]).unwrap();
        match s.webhook.unwrap().certificates {
            Certificates::SelfManaged(cfg) => assert_eq!(cfg.check_every, Duration::from_secs(2)),
            other => panic!("{other:?}"),
        }

        let s = settings(
            &args(&["--default-tenant-id=flag"]),
            &[("AZURE_TENANT_ID", "t")],
        );
        assert_eq!(
            s.unwrap().webhook.unwrap().defaults.tenant_id.as_deref(),
            Some("flag")
        );
    }

    #[test]
    fn parts_that_do_not_run_need_no_settings() {
        let argv = ["mlflow-operator", "run", "--no-webhook", "--no-controller"];
        let Command::Run(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        let s = settings(&a, &[]).unwrap();
        assert!(s.webhook.is_none() && s.controller.is_none());
    }

    #[test]
    fn startup_errors_name_the_flag() {
        let argv = ["mlflow-operator", "run", "--no-controller"];
        let Command::Run(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        let err = settings(&a, &[]).err().unwrap().to_string();
        assert!(
            err.contains("--tls-cert-file") && err.contains("--self-signed"),
            "{err}"
        );

        let a = args(&["--azure-ca-file=/nonexistent/ca.pem"]);
        let err = settings(&a, &[]).err().unwrap().to_string();
        assert!(err.contains("--azure-ca-file /nonexistent/ca.pem"), "{err}");
    }

    /// `run` and the offline `inject` plan with the same defaults from the same flag and
    /// environment, so the preview decides as the webhook does.
    #[test]
    fn run_and_inject_plan_with_the_same_defaults() {
        for (flags, vars) in [
            (vec![], vec![]),
            (vec![], vec![("AZURE_TENANT_ID", "env")]),
            (vec!["--default-tenant-id=flag"], vec![]),
            (
                vec!["--default-tenant-id=flag"],
                vec![("AZURE_TENANT_ID", "env")],
            ),
        ] {
            let run = settings(&args(&flags), &vars)
                .unwrap()
                .webhook
                .unwrap()
                .defaults;
            let mut argv = vec!["mlflow-operator", "inject", "--binding", "b.yaml"];
            argv.extend_from_slice(&flags);
            let Command::Inject(inject) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not inject")
            };
            let var = |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            let offline = crate::cli::inject::defaults(&inject, var);
            assert_eq!(offline, run, "{flags:?} {vars:?}");
        }
    }
}
