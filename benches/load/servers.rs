//! The servers under test, each its own process on loopback: ours (the real
//! `mlflow-operator run` binary), the floors (this benchmark re-run as `serve-floor`) and
//! azure-workload-identity's webhook (a binary built outside the repository).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::client::Target;
use mlflow_operator_test_support::free_ports;

/// A start that has not answered with a patch by then has failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Kind {
    Ours,
    Floor,
    /// The floor that also reads the whole request (`serve-floor --read`).
    ReadingFloor,
    /// The reading floor answering each payload with ours' patch for it: the least a webhook
    /// that reads the pod and sends ours' answer pays.
    AnsweringFloor,
    Azwi,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Floor => "floor",
            Kind::ReadingFloor => "reading floor",
            Kind::AnsweringFloor => "answering floor",
            Kind::Azwi => "azwi",
        }
    }
}

/// How to start each server: the paths and names they need.
pub struct Launch {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub our_secret: String,
    pub our_ca: Vec<u8>,
    /// tls.crt and tls.key of the floor and azwi, signed by `ca`.
    pub cert_dir: PathBuf,
    pub ca: Vec<u8>,
    pub ours: PathBuf,
    pub azwi: Option<PathBuf>,
    pub logs: PathBuf,
    /// Ours' patch (base64) for each payload, by the payload's length: the answering floor's.
    pub answers: Vec<(usize, String)>,
}

pub struct Server {
    pub kind: Kind,
    pub target: Target,
    /// Process start to the first answer that carries a patch.
    pub ready_after: Duration,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Launch {
    /// Starts `kind` on free loopback ports and waits until it answers `probe` with a patch.
    pub async fn start(&self, kind: Kind, probe: &Bytes) -> anyhow::Result<Server> {
        let [port, side] = free_ports();
        let target = match kind {
            Kind::Ours => Target::new(port, "/mutate", &self.our_ca)?,
            Kind::Floor | Kind::ReadingFloor | Kind::AnsweringFloor => {
                Target::new(port, "/mutate", &self.ca)?
            }
            Kind::Azwi => azwi_target(&self.ca)?,
        };
        let started = Instant::now();
        let child = self.spawn(kind, port, side)?;
        let mut server = Server {
            kind,
            target,
            ready_after: Duration::ZERO,
            child,
        };
        server.ready_after = first_patch(&mut server, probe, started).await?;
        Ok(server)
    }

    /// Starts ours once so that it creates its certificate Secret, and keeps the CA.
    pub async fn create_our_certificate(&mut self, client: &kube::Client) -> anyhow::Result<()> {
        let [port, side] = free_ports();
        let mut child = self.spawn(Kind::Ours, port, side)?;
        let ca = crate::cluster::our_ca(client, &self.namespace, &self.our_secret).await;
        let _ = child.kill();
        let _ = child.wait();
        self.our_ca = ca?;
        Ok(())
    }

    fn spawn(&self, kind: Kind, port: u16, side: u16) -> anyhow::Result<Child> {
        let loopback = |p: u16| format!("127.0.0.1:{p}");
        let mut cmd = match kind {
            Kind::Ours => {
                let mut cmd = Command::new(&self.ours);
                cmd.arg("run")
                    .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                    .args([
                        "--self-signed",
                        "--no-controller",
                        "--cert-dns-names=127.0.0.1",
                    ])
                    .arg(format!("--namespace={}", self.namespace))
                    .arg(format!("--cert-secret={}", self.our_secret))
                    .arg(format!("--webhook-config={}", self.namespace))
                    .arg(format!("--webhook-addr={}", loopback(port)))
                    .arg(format!("--metrics-addr={}", loopback(side)));
                cmd
            }
            Kind::Floor | Kind::ReadingFloor | Kind::AnsweringFloor => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("serve-floor");
                if kind != Kind::Floor {
                    cmd.arg("--read");
                }
                cmd.arg(loopback(port)).arg(&self.cert_dir);
                if kind == Kind::AnsweringFloor {
                    cmd.args(self.answers.iter().map(|(len, p)| format!("{len}:{p}")));
                }
                cmd
            }
            Kind::Azwi => {
                let bin = self.azwi.as_ref().context("no azwi binary")?;
                self.azwi_command(bin, side)?
            }
        };
        // Appended: every round starts the servers again.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", kind.name())))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))
    }

    fn azwi_command(&self, bin: &Path, metrics: u16) -> anyhow::Result<Command> {
        let [health] = free_ports();
        let mut cmd = Command::new(bin);
        cmd.arg("--disable-cert-rotation")
            .arg(format!("--webhook-cert-dir={}", self.cert_dir.display()))
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics}"))
            .env("AZURE_TENANT_ID", crate::cluster::TENANT_ID)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAMESPACE", &self.namespace);
        Ok(cmd)
    }
}

/// azwi listens where controller-runtime's webhook server does by default: port 9443.
fn azwi_target(ca: &[u8]) -> anyhow::Result<Target> {
    Target::new(9443, "/mutate-v1-pod", ca)
}

/// Tries a review on a new connection every 2 ms until one is answered with a patch; returns
/// the time since `started`.
async fn first_patch(
    server: &mut Server,
    probe: &Bytes,
    started: Instant,
) -> anyhow::Result<Duration> {
    let mut last = String::from("no answer");
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "{} exited at start ({status}); last: {last}",
                server.kind.name()
            );
        }
        let attempt = async {
            let mut conn = server.target.connect().await?;
            conn.review(probe).await
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(())) => return Ok(started.elapsed()),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "no answer within 1 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!(
        "{} gave no patched answer within {START_TIMEOUT:?}; last: {last}",
        server.kind.name()
    )
}
