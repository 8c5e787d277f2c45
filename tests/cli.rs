//! The command line's own commands as the real binary, no cluster needed: `completion` scripts
//! the shells load, `version` and what it says the build is, `run --log-format json` lines a
//! log pipeline can parse, and the CRD's top-level description.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mlflow-operator");
const SUBCOMMANDS: [&str; 7] = [
    "run",
    "crd",
    "inject",
    "check",
    "explain",
    "completion",
    "version",
];

/// `mlflow-operator <args>`: its stdout, after asserting it succeeded.
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_loads_the_completion_script() {
    let script = format!("source <('{BIN}' completion bash) && complete -p mlflow-operator");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("mlflow-operator"), "{stdout}");
    assert!(stderr.is_empty(), "bash complained: {stderr}");
}

#[test]
fn every_shell_script_names_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = stdout_of(&["completion", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}'s script lacks {sub}");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused() {
    let out = Command::new(BIN)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

/// The commit `version` should report: HEAD, unless the build was given one, or "unknown"
/// outside git.
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_json_has_the_commit_and_an_rfc3339_date() {
    let text = stdout_of(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    // In this order, as `kubectl version -o json` and the text output give them.
    let at = |key: &str| text.find(&format!("\"{key}\":")).expect(key);
    assert!(
        at("version") < at("commit") && at("commit") < at("buildDate"),
        "{text}"
    );
    assert_eq!(v.as_object().unwrap().len(), 3, "{text}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (commit, date) = (
        v["commit"].as_str().unwrap(),
        v["buildDate"].as_str().unwrap(),
    );
    let given = std::env::var("MLFLOW_OPERATOR_COMMIT").is_ok_and(|c| !c.is_empty());
    match head_commit() {
        Some(head) if !given => assert_eq!(commit, head, "not HEAD's commit"),
        Some(_) => assert!(is_full_hash(commit), "{commit}"),
        None => assert!(commit == "unknown" || is_full_hash(commit), "{commit}"),
    }
    if commit != "unknown" || std::env::var("SOURCE_DATE_EPOCH").is_ok() {
        let parsed: Result<jiff::Timestamp, _> = date.parse();
        assert!(parsed.is_ok(), "not RFC 3339: {date}");
    }
}

fn is_full_hash(commit: &str) -> bool {
    commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn version_text_and_the_version_flag() {
    let text = stdout_of(&["version"]);
    let lines: Vec<&str> = text.lines().collect();
    let version = format!("mlflow-operator {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(lines[0], version);
    assert!(lines[1].starts_with("commit: "), "{text}");
    assert!(lines[2].starts_with("build date: "), "{text}");
    assert_eq!(stdout_of(&["--version"]).trim(), version);
}

#[test]
fn help_shows_examples() {
    for sub in ["run", "inject", "check", "explain", "completion", "version"] {
        let help = stdout_of(&[sub, "--help"]);
        let examples = help.split_once("Examples:").map(|(_, e)| e);
        let example = format!("mlflow-operator {sub}");
        assert!(
            examples.is_some_and(|e| e.contains(&example)),
            "{sub} --help: {help}"
        );
    }
}

#[test]
fn the_crd_describes_the_resource() {
    let crd: Value = serde_yaml_ng::from_str(&stdout_of(&["crd"])).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let description = schema["description"].as_str().unwrap();
    for words in ["Binds a namespace", "Azure Machine Learning", "any MLflow"] {
        assert!(description.contains(words), "{description}");
    }
    assert!(
        description.contains("mlflow-operator.io/track"),
        "{description}"
    );
    assert!(!description.contains("Auto-generated"), "{description}");
}

/// A kubeconfig whose API server is a closed loopback port: `run` starts, logs every failed
/// call, and serves its listeners, with no cluster.
fn unreachable_kubeconfig(dir: &Path) -> String {
    let port = mlflow_operator_test_support::free_port();
    let path = dir.join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: closed\n\
         clusters: [{{name: closed, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n\
         contexts: [{{name: closed, context: {{cluster: closed, user: nobody}}}}]\n\
         users: [{{name: nobody, user: {{}}}}]\n"
    );
    std::fs::write(&path, kubeconfig).unwrap();
    path.display().to_string()
}

/// Logged once the webhook's listener is up, at info.
const LISTENING: &str = "metrics and health listening";
/// Logged at warn (the certificate files do not exist), for when RUST_LOG hides info.
const NO_CERTIFICATE: &str = "webhook certificate not loaded yet";
/// Logged first, before the webhook, the endpoints or the controller start.
const NO_SERVICE_ACCOUNT: &str = "cannot read the operator's ServiceAccount";

/// Runs `mlflow-operator run` against no API server until it logs `until`, then stops it with
/// SIGTERM; returns everything it wrote (stdout, then stderr).
fn run_briefly(flags: &[&str], env: &[(&str, &str)], until: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let missing = |name: &str| dir.path().join(name).display().to_string();
    let mut child = Command::new(BIN)
        .args(["run", "--kubeconfig", &kubeconfig, "--namespace", "ns"])
        .args(["--identity", "test", "--service-account", "operator"])
        .args(["--metrics-addr=127.0.0.1:0", "--webhook-addr=127.0.0.1:0"])
        .args(["--tls-cert-file", &missing("tls.crt")])
        .args(["--tls-key-file", &missing("tls.key")])
        .args(flags)
        .env_remove("MLFLOW_OPERATOR_LOG_FORMAT")
        .env("RUST_LOG", "info,kube_runtime=warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let read =
        || std::fs::read_to_string(&stdout).unwrap() + &std::fs::read_to_string(&stderr).unwrap();
    let start = Instant::now();
    while !read().contains(until) {
        let exited = child.try_wait().unwrap();
        assert!(exited.is_none(), "exited early ({exited:?}): {}", read());
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never logged {until:?}: {}",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, which has not been waited for, so the pid is still ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", read());
    read()
}

/// Asserts every line is one JSON log event; returns them.
fn json_events(output: &str) -> Vec<Value> {
    let events: Vec<Value> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let event: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let message = event["fields"]["message"]
                .as_str()
                .or(event["message"].as_str());
            assert!(message.is_some(), "no message: {line}");
            assert!(event["level"].is_string(), "no level: {line}");
            assert!(event["target"].is_string(), "no target: {line}");
            event
        })
        .collect();
    assert!(events.len() >= 3, "too few lines: {output}");
    events
}

fn messages(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect()
}

#[test]
fn json_logs_parse_line_by_line() {
    let events = json_events(&run_briefly(&["--log-format", "json"], &[], LISTENING));
    let messages = messages(&events);
    for said in ["webhook listening (HTTPS, /mutate)", "shutting down"] {
        assert!(messages.contains(&said), "{said:?} not in {messages:?}");
    }
    let levels: Vec<&str> = events.iter().filter_map(|e| e["level"].as_str()).collect();
    assert!(
        levels.contains(&"WARN") && levels.contains(&"INFO"),
        "{levels:?}"
    );
}

/// `run_briefly` asserts a clean exit: when the handler was installed only once everything had
/// started, a SIGTERM this early took the signal's default action and killed the process. That
/// lost race showed only on a loaded machine (a CI run, with the signal sent after the listening
/// line); on a quiet one the old order also got here first.
#[test]
fn sigterm_while_starting_stops_gracefully() {
    let output = run_briefly(&["--log-format", "json"], &[], NO_SERVICE_ACCOUNT);
    let events = json_events(&output);
    assert!(messages(&events).contains(&"shutting down"), "{output}");
}

#[test]
fn json_logs_from_the_environment_keep_the_rust_log_filter() {
    let env = [("MLFLOW_OPERATOR_LOG_FORMAT", "json"), ("RUST_LOG", "warn")];
    let events = json_events(&run_briefly(&[], &env, NO_CERTIFICATE));
    let infos: Vec<&Value> = events.iter().filter(|e| e["level"] == "INFO").collect();
    assert!(infos.is_empty(), "RUST_LOG=warn let through {infos:?}");
}

#[test]
fn logs_are_text_by_default() {
    let output = run_briefly(&[], &[("NO_COLOR", "1")], LISTENING);
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{output}");
    for line in lines {
        assert!(serde_json::from_str::<Value>(line).is_err(), "JSON: {line}");
    }
    assert!(
        output.contains(" INFO ") && output.contains("shutting down"),
        "{output}"
    );
}
