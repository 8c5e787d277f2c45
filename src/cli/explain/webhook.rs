//! What the real webhook does with the target's pod now: a server-side dry-run through the API
//! server, read back per container (the variables it would set, each skip and why).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;

use super::object::Target;
use crate::binding::INJECTED_ANNOTATION;
use crate::cli::cluster::{self, Admission};

/// The webhook's answer.
#[derive(Debug, Serialize)]
pub struct WebhookAnswer {
    /// Which pod was sent (`the pod template of deployment/trainer`).
    pub source: String,
    /// `injected`, `refused`, `admitted-unchanged`, `unreachable` or `failed`.
    pub outcome: &'static str,
    /// The injected annotation it would write (`<binding>/<generation>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected: Option<String>,
    /// The refusal or failure message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub containers: Vec<ContainerPlan>,
    /// The admission warnings, as the webhook wrote them.
    pub warnings: Vec<String>,
}

/// One container (or init container) of the answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    /// The variables the webhook adds, in its order.
    pub sets: Vec<String>,
    /// The webhook's warnings about this container: why something was left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// The webhook configuration whose namespaceSelector leaves `ns` out, if one does.
pub async fn excluded(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    let installs = cluster::installs(client).await?;
    let labels = Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await?
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default();
    let labels: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(installs
        .into_iter()
        .find(|i| !crate::inject::selector_matches(i.webhook.namespace_selector.as_ref(), &labels))
        .map(|i| i.config))
}

/// Sends the target's pod through the API server (dry-run) and reads the webhook's answer.
pub async fn ask(client: &Client, ns: &str, target: &Target) -> anyhow::Result<WebhookAnswer> {
    let admission = cluster::dry_run(client, ns, &target.pod).await?;
    let mut answer = WebhookAnswer {
        source: target.source.clone(),
        outcome: "failed",
        injected: None,
        message: None,
        containers: Vec::new(),
        warnings: Vec::new(),
    };
    match admission {
        Admission::Admitted { pod, warnings } => {
            let injected = pod
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(INJECTED_ANNOTATION))
                .and_then(Value::as_str);
            answer.outcome = if injected.is_some() {
                "injected"
            } else {
                "admitted-unchanged"
            };
            answer.injected = injected.map(str::to_string);
            answer.containers = containers(&target.pod, &pod, &warnings);
            answer.warnings = warnings;
        }
        Admission::Refused { message } => {
            (answer.outcome, answer.message) = ("refused", Some(message))
        }
        Admission::Unreachable { message } => {
            (answer.outcome, answer.message) = ("unreachable", Some(message))
        }
        Admission::Failed { status, message } => {
            answer.message = Some(format!("HTTP {status}: {message}"))
        }
    }
    Ok(answer)
}

/// Per container: the env names the admitted pod has that the sent one did not, and the
/// warnings that name the container.
pub fn containers(sent: &Value, admitted: &Value, warnings: &[String]) -> Vec<ContainerPlan> {
    let names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(str::to_string))
            .collect()
    };
    let mut out = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in admitted["spec"][list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let before: BTreeSet<String> = sent["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == c["name"])
                .map(names)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let sets = names(c)
                .into_iter()
                .filter(|n| !before.contains(n))
                .collect();
            let quoted = format!("container \"{name}\"");
            let skipped = warnings
                .iter()
                .filter(|w| w.contains(&quoted))
                .cloned()
                .collect();
            out.push(ContainerPlan {
                name,
                sets,
                skipped,
            });
        }
    }
    out
}

impl WebhookAnswer {
    pub fn text(&self) -> String {
        let mut out = format!(
            "\nthe webhook now (server-side dry-run of {}): ",
            self.source
        );
        match (self.outcome, &self.injected, &self.message) {
            ("injected", Some(by), _) => {
                out.push_str(&format!("injects it (binding/generation {by})\n"))
            }
            ("refused", _, Some(m)) => out.push_str(&format!("refuses it:\n  {m}\n")),
            ("unreachable", _, Some(m)) => {
                out.push_str(&format!("the API server could not call it:\n  {m}\n"))
            }
            ("admitted-unchanged", _, _) => out.push_str("admits it unchanged\n"),
            (_, _, m) => out.push_str(&format!(
                "the API server refused the pod: {}\n",
                m.as_deref().unwrap_or("")
            )),
        }
        for c in &self.containers {
            let sets = if c.sets.is_empty() {
                "nothing".to_string()
            } else {
                c.sets.join(", ")
            };
            out.push_str(&format!("  container {}: sets {sets}\n", c.name));
            for s in &c.skipped {
                out.push_str(&format!("    {s}\n"));
            }
        }
        let general: Vec<&String> = self
            .warnings
            .iter()
            .filter(|w| !self.containers.iter().any(|c| c.skipped.contains(w)))
            .collect();
        for w in general {
            out.push_str(&format!("  warning: {w}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_answer_is_read_per_container_with_its_skips() {
        let sent = json!({"spec": {
            "initContainers": [{"name": "init", "env": [{"name": "A"}]}],
            "containers": [{"name": "train"}, {"name": "proxy"}]}});
        let admitted = json!({"spec": {
            "initContainers": [{"name": "init", "env": [{"name": "A"}, {"name": "MLFLOW_TRACKING_URI"}]}],
            "containers": [{"name": "train", "env": [{"name": "MLFLOW_TRACKING_URI"}, {"name": "MLFLOW_EXPERIMENT_NAME"}]}, {"name": "proxy"}]}});
        let warnings = vec![
            "mlflow-operator: container \"proxy\" is in mlflow-operator.io/skip-containers"
                .to_string(),
        ];
        let got = containers(&sent, &admitted, &warnings);
        let want = vec![
            ContainerPlan {
                name: "init".into(),
                sets: vec!["MLFLOW_TRACKING_URI".into()],
                skipped: vec![],
            },
            ContainerPlan {
                name: "train".into(),
                sets: vec![
                    "MLFLOW_TRACKING_URI".into(),
                    "MLFLOW_EXPERIMENT_NAME".into(),
                ],
                skipped: vec![],
            },
            ContainerPlan {
                name: "proxy".into(),
                sets: vec![],
                skipped: warnings.clone(),
            },
        ];
        assert_eq!(got, want);
    }
}
