//! Every log of the local cluster, searched for strings that must never be logged: the plane's
//! and the node's own logs (`$MLFLOW_OPERATOR_CLUSTER_DIR/logs`: kube-apiserver,
//! kube-controller-manager, kube-scheduler, etcd's log but not its data, the kubelet,
//! containerd, kube-proxy, CoreDNS) and the log of every container the node runs, current and
//! previous (the kubelet's `/var/log/pods`, under the node's root), plus `kubectl logs`
//! (current and `--previous`) of chosen pods through the API server.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};

/// One log and where it came from.
pub struct Log {
    pub source: String,
    pub text: String,
}

/// The cluster's own logs and every container log file on the node.
pub fn cluster_logs() -> Vec<Log> {
    let state = std::path::PathBuf::from(crate::cluster_env("MLFLOW_OPERATOR_CLUSTER_DIR"));
    let mut logs = Vec::new();
    read_logs(&state.join("logs"), &mut logs);
    read_logs(&state.join("node/root/var/log/pods"), &mut logs);
    logs
}

fn read_logs(dir: &std::path::Path, out: &mut Vec<Log>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_logs(&path, out);
        } else if path.extension().is_some_and(|e| e == "log")
            && let Ok(bytes) = std::fs::read(&path)
        {
            out.push(Log {
                source: path.display().to_string(),
                text: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
    }
}

/// `kubectl logs` and `kubectl logs --previous` of every pod matching `selector` in `ns`.
pub async fn pod_logs(client: &Client, ns: &str, selector: &str) -> Vec<Log> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    let mut logs = Vec::new();
    for pod in list.items {
        let name = pod.metadata.name.unwrap_or_default();
        for previous in [false, true] {
            let params = LogParams {
                previous,
                ..Default::default()
            };
            // A container that never restarted has no previous log: the API server says so.
            if let Ok(text) = pods.logs(&name, &params).await {
                let which = if previous { " --previous" } else { "" };
                logs.push(Log {
                    source: format!("kubectl logs -n {ns} {name}{which}"),
                    text,
                });
            }
        }
    }
    logs
}

/// The forms a secret could be logged in: as it is, base64 (standard and URL-safe, padded or
/// not), and for a JWT its signature alone (unique to that token).
pub fn forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![secret.to_string()];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(secret));
    }
    let parts: Vec<&str> = secret.split('.').collect();
    if parts.len() == 3 && parts[2].len() >= 40 {
        out.push(parts[2].to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// Every place one of `secrets` (what it is, its value) shows in `logs`, in any of its
/// [`forms`]: "<source>: <what> (<form length> characters)", never the secret itself.
pub fn leaks(logs: &[Log], secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, value) in secrets {
        for form in forms(value) {
            for log in logs.iter().filter(|l| l.text.contains(&form)) {
                found.push(format!(
                    "{}: {what} ({} characters)",
                    log.source,
                    form.len()
                ));
            }
        }
    }
    found
}
