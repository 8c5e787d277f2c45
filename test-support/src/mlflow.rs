//! The real MLflow: a `mlflow server` child process (sqlite backend in a temp dir, 127.0.0.1, a
//! free port) and the real Python client, both from the virtualenv `hack/mlflow-env` builds and
//! `hack/test` exports as MLFLOW_OPERATOR_MLFLOW_BIN. No skipping: without it the tests fail.
//! A server's REST API as the node suites read the runs their pods logged: `Rest`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{eventually_ok, free_port};

const BIN_VAR: &str = "MLFLOW_OPERATOR_MLFLOW_BIN";

/// The venv's bin directory, with `mlflow` and `python` in it, or a loud failure.
pub fn bin_dir() -> PathBuf {
    let hint = "run `hack/test`, or `export MLFLOW_OPERATOR_MLFLOW_BIN=$(hack/mlflow-env)`";
    let dir = PathBuf::from(
        std::env::var_os(BIN_VAR).unwrap_or_else(|| panic!("{BIN_VAR} is not set: {hint}")),
    );
    for exe in ["mlflow", "python"] {
        assert!(
            dir.join(exe).is_file(),
            "{BIN_VAR}={} has no `{exe}`: {hint}",
            dir.display()
        );
    }
    dir
}

/// Admin credentials of a server started with `--app-name basic-auth`.
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// A running `mlflow server`; the whole process group is killed on drop.
pub struct MlflowServer {
    pub port: u16,
    pub url: String,
    pub auth: Option<BasicAuth>,
    /// Time from spawn until /health answered.
    pub startup: Duration,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MlflowServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `auth`, the server runs the basic-auth app with those admin credentials.
    pub async fn start_with(auth: Option<BasicAuth>) -> Self {
        Self::start_opts(auth, false).await
    }

    /// A server that serves artifacts itself (`--serve-artifacts`): runs get
    /// `mlflow-artifacts:/<experiment>/<run>/artifacts` URIs, stored under its own directory and
    /// written through `PUT /api/2.0/mlflow-artifacts/artifacts/<path>`.
    pub async fn start_serving_artifacts() -> Self {
        Self::start_opts(None, true).await
    }

    async fn start_opts(auth: Option<BasicAuth>, serve_artifacts: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("server.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin.join("mlflow"));
        cmd.arg("server")
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", "1"])
            .current_dir(dir.path())
            .env("PATH", path_with(&bin))
            .env("HOME", dir.path())
            // No background job runner: tracking needs none, it costs CPU, and it keeps its
            // queue in a /dev/shm directory that outlives a killed server.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        if serve_artifacts {
            cmd.arg("--serve-artifacts")
                .arg("--artifacts-destination")
                .arg(dir.path().join("artifacts"));
        } else {
            cmd.arg("--default-artifact-root")
                .arg(dir.path().join("artifacts"));
        }
        if let Some(a) = &auth {
            // The basic-auth app reads its admin user and its own database from this file.
            let ini = dir.path().join("basic_auth.ini");
            std::fs::write(
                &ini,
                format!(
                    "[mlflow]\ndefault_permission = READ\n\
                     database_uri = sqlite:///{}\n\
                     admin_username = {}\nadmin_password = {}\n\
                     authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                    dir.path().join("basic_auth.db").display(),
                    a.username,
                    a.password
                ),
            )
            .unwrap();
            cmd.args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_CONFIG_PATH", &ini)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow-operator-e2e");
        }
        // Its own process group: `mlflow server` forks uvicorn workers and job runners, and
        // drop kills them all.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let began = Instant::now();
        let child = cmd.spawn().expect("spawn `mlflow server`");
        let mut server = Self {
            port,
            url: format!("http://127.0.0.1:{port}"),
            auth,
            startup: Duration::ZERO,
            child,
            log,
            _dir: dir,
        };
        server.wait_healthy(Duration::from_secs(120)).await;
        server.startup = began.elapsed();
        eprintln!(
            "mlflow server on port {port} healthy after {:?}",
            server.startup
        );
        server
    }

    async fn wait_healthy(&mut self, timeout: Duration) {
        let http = crate::http_client();
        let health = format!("{}/health", self.url);
        let what = format!("mlflow server on port {} to be healthy", self.port);
        let child = &mut self.child;
        // On failure, drop prints the server's log.
        eventually_ok(&what, timeout, || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("mlflow server exited with {status} before it was healthy");
            }
            let get = http.get(&health).timeout(Duration::from_secs(2)).send();
            async move {
                match get.await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("/health answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
    }

    /// Kills the server's process group now (for a server held in a static, which is never
    /// dropped).
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let r = crate::http_client()
            .request(method, url)
            .timeout(Duration::from_secs(30));
        match &self.auth {
            Some(a) => r.basic_auth(&a.username, Some(&a.password)),
            None => r,
        }
    }

    /// The id of experiment `name`, or None when the server has no such experiment.
    pub async fn experiment_id(&self, name: &str) -> Option<String> {
        let resp = self
            .request(
                reqwest::Method::GET,
                reqwest::Url::parse_with_params(
                    &format!("{}/api/2.0/mlflow/experiments/get-by-name", self.url),
                    [("experiment_name", name)],
                )
                .unwrap(),
            )
            .send()
            .await
            .expect("GET experiments/get-by-name");
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "get-by-name {name}: {status} {body}");
        Some(
            body["experiment"]["experiment_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no experiment_id in {body}"))
                .to_string(),
        )
    }

    /// The runs of experiment `experiment_id` named `run_name` (runs/search).
    pub async fn runs_named(&self, experiment_id: &str, run_name: &str) -> Vec<Value> {
        let resp = self
            .request(
                reqwest::Method::POST,
                format!("{}/api/2.0/mlflow/runs/search", self.url)
                    .parse()
                    .unwrap(),
            )
            .json(&json!({
                "experiment_ids": [experiment_id],
                "filter": format!("attributes.run_name = '{run_name}'"),
                "max_results": 10
            }))
            .send()
            .await
            .expect("POST runs/search");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "runs/search: {status} {body}");
        body["runs"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0)); this kills only what we spawned.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- mlflow server log -----\n{}----- end -----",
                self.log()
            );
        }
    }
}

/// An MLflow server's REST API, as the node suites read it: at `base`, with the `Host` header
/// its clients send (a server in the cluster checks it) and its basic-auth admin.
pub struct Rest {
    pub base: String,
    pub host: Option<String>,
    pub auth: Option<(String, String)>,
}

impl Rest {
    /// A server of this process, as the fake front door reaches it.
    pub fn local(server: &MlflowServer) -> Self {
        Self {
            base: server.url.clone(),
            host: None,
            auth: None,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let mut req = crate::http_client()
            .get(reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query).unwrap())
            .timeout(Duration::from_secs(30));
        if let Some(h) = &self.host {
            req = req.header(http::header::HOST, h);
        }
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn experiment_id(&self, name: &str) -> Option<String> {
        let (status, body) = self
            .get(
                "/api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await;
        match status {
            404 => None,
            200 => Some(
                body["experiment"]["experiment_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            s => panic!("get-by-name {name}: {s} {body}"),
        }
    }

    pub async fn run(&self, run_id: &str) -> Option<Value> {
        let (status, body) = self
            .get("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await;
        match status {
            200 => Some(body["run"].clone()),
            404 => None,
            s => panic!("runs/get {run_id}: {s} {body}"),
        }
    }

    /// The run is FINISHED in `experiment`, with param `epochs`, metric `loss`, tag
    /// `trained-by` and artifact `model.txt`.
    pub async fn assert_run(&self, result: &Value, experiment: &str) {
        let run_id = result["run_id"].as_str().unwrap();
        let experiment_id = self
            .experiment_id(experiment)
            .await
            .unwrap_or_else(|| panic!("the server has no experiment {experiment}"));
        let run = self
            .run(run_id)
            .await
            .unwrap_or_else(|| panic!("the server has no run {run_id}"));
        let info = &run["info"];
        assert_eq!(info["status"], "FINISHED", "{run}");
        assert_eq!(
            info["experiment_id"],
            experiment_id.as_str(),
            "run in experiment {experiment}: {run}"
        );
        let has = |kind: &str, key: &str| {
            run["data"][kind]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["key"] == key)
        };
        assert!(has("params", "epochs"), "param epochs: {run}");
        assert!(has("metrics", "loss"), "metric loss: {run}");
        assert!(has("tags", "trained-by"), "tag trained-by: {run}");
        let (status, listing) = self
            .get("/api/2.0/mlflow/artifacts/list", &[("run_id", run_id)])
            .await;
        assert_eq!(status, 200, "{listing}");
        assert!(
            listing["files"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["path"] == "model.txt"),
            "artifact model.txt of run {run_id}: {listing}"
        );
    }
}

fn path_with(bin: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display())
}

/// Runs `python -c script` with the venv's interpreter and exactly `env` (plus PATH and a
/// scratch HOME, so no credentials file of this machine is read). Returns stdout and stderr;
/// fails loudly when the script fails or outlives `timeout`.
pub async fn run_python(env: &BTreeMap<String, String>, script: &str, timeout: Duration) -> String {
    let bin = bin_dir();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin.join("python"));
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .envs(env)
        .env("PATH", path_with(&bin))
        .env("HOME", home.path())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn python");
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the MLflow client script ran longer than {timeout:?}"))
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the MLflow client script failed ({}) with env {env:?}\n{text}",
        out.status
    );
    text
}
