//! The real `mlflow-operator` binary as a child process: `run` with loopback ports, its output
//! in a temp file (printed when the test fails), killed when dropped.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{eventually, free_port};

/// The `mlflow-operator` binary Cargo built beside the running test or benchmark
/// (`target/<profile>/deps/<test>` runs, `target/<profile>/mlflow-operator` is the binary; Cargo
/// builds it for every integration test and benchmark of the package).
pub fn binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent());
    let bin = profile_dir.map(|d| d.join("mlflow-operator"));
    bin.filter(|b| b.is_file()).unwrap_or_else(|| {
        panic!(
            "no mlflow-operator binary beside {}: run the tests with cargo test",
            exe.display()
        )
    })
}

pub struct OperatorProcess {
    pub label: String,
    pub metrics_port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl OperatorProcess {
    /// Starts `mlflow-operator run --metrics-addr 127.0.0.1:<free port> <args>`.
    pub fn start(label: &str, args: &[&str]) -> Self {
        Self::start_with_env(label, args, &[])
    }

    /// As [`Self::start`], with extra environment variables (the operator's Azure identity).
    pub fn start_with_env(label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let metrics_port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(binary())
            .arg("run")
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .args(args)
            .env("RUST_LOG", "info,kube_runtime=warn")
            .env("NO_COLOR", "1")
            // A panic still prints its backtrace when RUST_BACKTRACE is set, but errors do not
            // capture one (Azure's SDK would with every error it makes), as in the pod, where
            // neither is set: a benchmark's memory figures are the pod's.
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start mlflow-operator");
        Self {
            label: label.to_string(),
            metrics_port,
            child,
            log,
        }
    }

    /// The webhook alone (`--no-controller`) on a free loopback port, serving a fresh loopback
    /// certificate from files in `dir`, once `/readyz` answers 200; returns the CA PEM and the
    /// port.
    pub async fn webhook_only(dir: &std::path::Path) -> (Self, String, u16) {
        Self::webhook_only_with(dir, &[]).await
    }

    /// [`Self::webhook_only`] with more flags.
    pub async fn webhook_only_with(dir: &std::path::Path, more: &[&str]) -> (Self, String, u16) {
        crate::ensure_crd(&crate::client().await).await;
        let (cert, key, pems) = crate::write_loopback_certificate(dir);
        let port = free_port();
        let (addr, cert, key) = (
            format!("--webhook-addr=127.0.0.1:{port}"),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-key-file={}", key.display()),
        );
        let mut args = vec!["--no-controller", &addr, &cert, &key];
        args.extend_from_slice(more);
        let op = Self::start("webhook", &args);
        op.wait_status("/readyz", 200, Duration::from_secs(60))
            .await;
        (op, pems.ca_cert, port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        let mut s = String::new();
        let _ = self.log.reopen().unwrap().read_to_string(&mut s);
        s
    }

    /// GET on the plain-HTTP metrics/health listener: (status, body), None if not answering.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path).await
    }

    /// The value of an unlabelled metric, once the process answers.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Whether `mlflow_operator_leader` is 1 (None while the process does not answer).
    pub async fn is_leader(&self) -> Option<bool> {
        Some(self.metric("mlflow_operator_leader").await? == 1.0)
    }

    /// Waits until GET `path` answers `status`.
    pub async fn wait_status(&self, path: &str, status: u16, timeout: Duration) -> String {
        eventually(
            &format!("{} {path} to answer {status}", self.label),
            timeout,
            || async {
                self.get(path)
                    .await
                    .filter(|(s, _)| *s == status)
                    .map(|(_, b)| b)
            },
        )
        .await
    }

    /// SIGKILL: no chance to release anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as the kubelet sends before a pod stops.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill on PATH")
            .success();
        assert!(ok, "sending SIGTERM to {}", self.label);
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let label = self.label.clone();
        let child = &mut self.child;
        let poll = || std::future::ready(child.try_wait().unwrap());
        eventually(&format!("{label} to exit"), timeout, poll).await
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} (pid {}) -----\n{}----- end of {} -----",
                self.label,
                self.pid(),
                self.output(),
                self.label
            );
        }
    }
}

/// A review the webhook allows without reading any binding (a DELETE).
const DELETE_REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"ns","operation":"DELETE","object":null}}"#;

/// One review over a fresh TLS connection to the webhook on loopback `port`, as the API server
/// sends it: the time to its answer, or why there was none within `budget`.
pub async fn answered(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    budget: Duration,
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let req = format!(
            "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{DELETE_REVIEW}",
            DELETE_REVIEW.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        match text.starts_with("HTTP/1.1 200") && text.contains("\"allowed\":true") {
            true => Ok(()),
            false => Err(format!("answered {text:?}")),
        }
    };
    match tokio::time::timeout(budget, exchange).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {budget:?}")),
    }
}

/// A minimal HTTP/1.1 GET (the endpoints are plain HTTP on loopback).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}
