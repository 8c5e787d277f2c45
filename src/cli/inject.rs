//! `mlflow-operator inject`: the webhook, offline. Reads multi-document YAML, runs the planner on
//! every opted-in pod and pod template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
//! CronJob, and the items of a `kind: List`), and prints the documents in the same order. Other
//! documents, and workloads the webhook would never see, are written back verbatim.

use std::io::{Read, Write};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use super::InjectArgs;

mod order;
use crate::binding::{MlflowWorkspaceBinding, READY, TRUE};
use crate::inject::{
    Defaults, NamespaceView, OnMissingBinding, Plan, is_opted_in, plan, service_account_name,
};

/// Runs `mlflow-operator inject`; returns the process exit code.
pub fn run(args: &InjectArgs) -> i32 {
    let stderr = &mut std::io::stderr();
    match run_inner(args, |name| std::env::var(name).ok(), stderr) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return 1;
            }
            0
        }
        Err(message) => {
            let _ = writeln!(stderr, "{message}");
            1
        }
    }
}

/// `inject` with environment variables read through `var`.
fn run_inner(
    args: &InjectArgs,
    var: impl Fn(&str) -> Option<String>,
    warn: &mut dyn Write,
) -> Result<String, String> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            format!(
                "mlflow-operator inject: cannot read {what} {}: {e}",
                path.display()
            )
        })
    };
    let binding = load_binding(&read(&args.binding, "--binding")?).map_err(|e| {
        format!(
            "mlflow-operator inject: --binding {}: {e}",
            args.binding.display()
        )
    })?;
    let service_account = match &args.service_account {
        Some(path) => Some(
            load_service_account(&read(path, "--service-account")?).map_err(|e| {
                format!(
                    "mlflow-operator inject: --service-account {}: {e}",
                    path.display()
                )
            })?,
        ),
        None => None,
    };
    let input = if args.filename.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("mlflow-operator inject: cannot read stdin: {e}"))?;
        s
    } else {
        read(&args.filename, "-f")?
    };
    let defaults = defaults(args, var);
    let offline = Offline {
        binding: &binding,
        service_account: service_account.as_ref(),
        defaults: &defaults,
    };
    let (out, warnings) = offline.documents(&input)?;
    for w in warnings {
        let _ = writeln!(warn, "{w}");
    }
    Ok(out)
}

/// The planner's defaults: what `run` plans with for the same flag and environment, except
/// that a preview always shows refusals (onMissingBinding is a cluster setting).
pub(crate) fn defaults(args: &InjectArgs, var: impl Fn(&str) -> Option<String>) -> Defaults {
    Defaults::new(
        args.default_tenant_id.as_deref(),
        OnMissingBinding::Refuse,
        var,
    )
}

/// Reads the binding and makes it Ready the way the cluster would: from its status.trackingUri,
/// else from spec.trackingUri. An azureML binding needs the status copied from the cluster.
pub fn load_binding(text: &str) -> Result<MlflowWorkspaceBinding, String> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    match value.get("kind").and_then(Value::as_str) {
        Some("MlflowWorkspaceBinding") => {}
        other => {
            return Err(format!(
                "expected one MlflowWorkspaceBinding, found kind {}",
                other.unwrap_or("(none)")
            ));
        }
    }
    let mut b: MlflowWorkspaceBinding = serde_json::from_value(value)
        .map_err(|e| format!("not a valid MlflowWorkspaceBinding: {e}"))?;
    let name = b
        .metadata
        .name
        .clone()
        .ok_or("the binding has no metadata.name")?;
    let mut status = b.status.take().unwrap_or_default();
    let Some(tracking_uri) = status
        .tracking_uri
        .clone()
        .or_else(|| b.spec.tracking_uri.clone())
    else {
        return Err(format!(
            "binding \"{name}\" uses spec.azureML and has no status.trackingUri: the URI is resolved in the cluster, so copy the binding with its status from there (kubectl get mwb {name} -o yaml > binding.yaml)"
        ));
    };
    status.set_ready(Condition {
        type_: READY.to_string(),
        status: TRUE.to_string(),
        reason: "Offline".to_string(),
        message: "treated as Ready by mlflow-operator inject".to_string(),
        observed_generation: b.metadata.generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    });
    status.observed_generation = b.metadata.generation;
    status.tracking_uri = Some(tracking_uri);
    b.status = Some(status);
    Ok(b)
}

fn load_service_account(text: &str) -> Result<ServiceAccount, String> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    match value.get("kind").and_then(Value::as_str) {
        Some("ServiceAccount") => {
            serde_json::from_value(value).map_err(|e| format!("not a valid ServiceAccount: {e}"))
        }
        other => Err(format!(
            "expected one ServiceAccount, found kind {}",
            other.unwrap_or("(none)")
        )),
    }
}

/// Splits multi-document YAML at `---` lines, keeping each document's text. Content after the
/// marker on the same line belongs to the document; an empty document before a leading `---` is
/// dropped.
pub fn split_documents(input: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker {
            let mut doc = String::new();
            let rest = bare[3..].trim();
            if !rest.is_empty() {
                doc.push_str(rest);
                doc.push('\n');
            }
            docs.push(doc);
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
        }
    }
    if docs.len() > 1 && docs[0].trim().is_empty() {
        docs.remove(0);
    }
    docs
}

/// Whether the text holds nothing but comments and blank lines.
fn is_blank(doc: &str) -> bool {
    doc.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// Where the pod (template) of a workload is, as a JSON pointer; None for other kinds.
pub fn template_pointer(obj: &Value) -> Option<&'static str> {
    let kind = obj.get("kind")?.as_str()?;
    let group = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.split_once('/').map_or("", |(g, _)| g));
    let in_group = |g: &str| group.is_none_or(|have| have == g);
    match kind {
        "Pod" if in_group("") => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" if in_group("apps") => {
            Some("/spec/template")
        }
        "Job" if in_group("batch") => Some("/spec/template"),
        "CronJob" if in_group("batch") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// `kind/name` of an object, for messages.
fn describe(obj: &Value) -> String {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("(no kind)");
    let name = obj
        .pointer("/metadata/name")
        .or_else(|| obj.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    format!("{kind}/{name}")
}

/// The planner's inputs for offline injection.
pub struct Offline<'a> {
    pub binding: &'a MlflowWorkspaceBinding,
    pub service_account: Option<&'a ServiceAccount>,
    pub defaults: &'a Defaults,
}

impl Offline<'_> {
    /// Injects every document; returns the output text and the warnings, or the first error.
    pub fn documents(&self, input: &str) -> Result<(String, Vec<String>), String> {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for (i, doc) in split_documents(input).into_iter().enumerate() {
            let index = i + 1;
            if is_blank(&doc) {
                out.push(doc);
                continue;
            }
            let mut value: Value = serde_yaml_ng::from_str(&doc).map_err(|e| {
                format!("mlflow-operator inject: document {index}: not valid YAML: {e}")
            })?;
            let label = format!("document {index} ({})", describe(&value));
            let changed = if value.get("kind").and_then(Value::as_str) == Some("List") {
                let mut changed = false;
                if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
                    for (j, item) in items.iter_mut().enumerate() {
                        let item_label =
                            format!("document {index} item {} ({})", j + 1, describe(item));
                        changed |= self.object(item, &item_label, &mut warnings)?;
                    }
                }
                changed
            } else {
                self.object(&mut value, &label, &mut warnings)?
            };
            if changed {
                let input: serde_yaml_ng::Value = serde_yaml_ng::from_str(&doc).unwrap_or_default();
                let mutated = serde_yaml_ng::to_value(&value).map_err(|e| {
                    format!("mlflow-operator inject: {label}: cannot write YAML: {e}")
                })?;
                let text =
                    serde_yaml_ng::to_string(&order::like_input(&input, mutated)).map_err(|e| {
                        format!("mlflow-operator inject: {label}: cannot write YAML: {e}")
                    })?;
                out.push(text);
            } else {
                out.push(doc);
            }
        }
        Ok((out.join("---\n"), warnings))
    }

    /// Injects one object if it is an opted-in workload; returns whether it changed.
    fn object(
        &self,
        obj: &mut Value,
        label: &str,
        warnings: &mut Vec<String>,
    ) -> Result<bool, String> {
        let Some(at) = template_pointer(obj) else {
            return Ok(false);
        };
        if !obj.pointer(at).is_some_and(is_opted_in) {
            return Ok(false);
        }
        let fail = |message: String| format!("mlflow-operator inject: {label}: {message}");
        let namespace = self.namespace_of(obj).map_err(fail)?;
        let Some(template) = obj.pointer_mut(at) else {
            return Ok(false);
        };
        let view = NamespaceView {
            namespace: &namespace,
            bindings: vec![self.binding],
            service_account: self.service_account_of(template, label, warnings),
        };
        let labelled = |w: Vec<String>| w.into_iter().map(|w| format!("{label}: {w}"));
        match plan(template, &view, self.defaults) {
            Plan::Inject {
                patch, warnings: w, ..
            } => {
                warnings.extend(labelled(w));
                if patch.is_empty() {
                    return Ok(false);
                }
                json_patch::patch(template, &patch.operations())
                    .map_err(|e| fail(format!("cannot apply the patch: {e}")))?;
                Ok(true)
            }
            Plan::Allow { warnings: w } => {
                warnings.extend(labelled(w));
                Ok(false)
            }
            Plan::Refuse(refusal) => Err(fail(refusal.message)),
        }
    }

    /// The namespace the object's pods would run in: its own, else the binding's, else
    /// `default`; an error when it is not the binding's (bindings never reach across).
    fn namespace_of(&self, obj: &Value) -> Result<String, String> {
        let doc = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let binding = self
            .binding
            .metadata
            .namespace
            .as_deref()
            .filter(|s| !s.is_empty());
        if let (Some(doc), Some(binding)) = (doc, binding)
            && doc != binding
        {
            return Err(format!(
                "it is in namespace \"{doc}\" but MlflowWorkspaceBinding \"{}\" is in namespace \"{binding}\"; bindings never reach across namespaces",
                self.binding.metadata.name.as_deref().unwrap_or("")
            ));
        }
        Ok(doc.or(binding).unwrap_or("default").to_string())
    }

    /// `--service-account`, when the pods run as it; a warning when they run as another.
    fn service_account_of(
        &self,
        template: &Value,
        label: &str,
        warnings: &mut Vec<String>,
    ) -> Option<&ServiceAccount> {
        let pod_sa = service_account_name(template);
        self.service_account.filter(|sa| {
            let name = sa.metadata.name.as_deref().unwrap_or(pod_sa);
            if name != pod_sa {
                warnings.push(format!(
                    "{label}: the pod runs as ServiceAccount \"{pod_sa}\", not \"{name}\" of --service-account; ignored"
                ));
            }
            name == pod_sa
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_split_at_markers() {
        for (input, want) in [
            ("", vec![""]),
            ("a: 1\n", vec!["a: 1\n"]),
            ("a: 1\n---\nb: 2\n", vec!["a: 1\n", "b: 2\n"]),
            ("---\na: 1\n---\nb: 2", vec!["a: 1\n", "b: 2"]),
            ("# head\n---\na: 1\n", vec!["# head\n", "a: 1\n"]),
            ("a: 1\n--- # c\nb: 2\n", vec!["a: 1\n", "# c\nb: 2\n"]),
            ("a: |\n  ---\n  x\n---\n", vec!["a: |\n  ---\n  x\n", ""]),
            ("a: 1\r\n---\r\nb: 2\r\n", vec!["a: 1\r\n", "b: 2\r\n"]),
            ("a: ---x\n----\n", vec!["a: ---x\n----\n"]),
        ] {
            assert_eq!(split_documents(input), want, "{input:?}");
        }
    }

    #[test]
    fn workload_kinds_and_their_pod_templates() {
        for (obj, want) in [
            (json!({"apiVersion": "v1", "kind": "Pod"}), Some("")),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
                Some("/spec/template"),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet"}),
                Some("/spec/template"),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet"}),
                Some("/spec/template"),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet"}),
                Some("/spec/template"),
            ),
            (
                json!({"apiVersion": "batch/v1", "kind": "Job"}),
                Some("/spec/template"),
            ),
            (
                json!({"apiVersion": "batch/v1", "kind": "CronJob"}),
                Some("/spec/jobTemplate/spec/template"),
            ),
            (json!({"kind": "Deployment"}), Some("/spec/template")),
            (json!({"apiVersion": "example.com/v1", "kind": "Job"}), None),
            (json!({"apiVersion": "v1", "kind": "ConfigMap"}), None),
            (json!({"apiVersion": "v1"}), None),
            (json!("scalar"), None),
        ] {
            assert_eq!(template_pointer(&obj), want, "{obj}");
        }
    }

    #[test]
    fn binding_is_made_ready_from_status_or_spec_uri() {
        let from_spec = load_binding(
            "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {name: b, generation: 2}\nspec: {trackingUri: 'http://x'}\n",
        )
        .unwrap();
        assert!(from_spec.is_ready());
        assert_eq!(
            from_spec.status.unwrap().tracking_uri.as_deref(),
            Some("http://x")
        );

        let azure = "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {name: b}\nspec: {azureML: {subscriptionId: s, resourceGroup: r, workspaceName: w}}\n";
        let err = load_binding(azure).unwrap_err();
        assert!(err.contains("kubectl get mwb b -o yaml"), "{err}");

        let with_status = format!(
            "{azure}status:\n  trackingUri: azureml://x\n  conditions: [{{type: Ready, status: 'False', reason: Stale, message: m, lastTransitionTime: '2026-01-01T00:00:00Z'}}]\n"
        );
        let b = load_binding(&with_status).unwrap();
        assert!(b.is_ready());
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some("azureml://x")
        );

        assert!(
            load_binding("kind: ConfigMap\n")
                .unwrap_err()
                .contains("kind ConfigMap")
        );
        assert!(load_binding(": : :\n").is_err());
    }

    /// The webhook takes the default tenant from AZURE_TENANT_ID; so must the preview, or it
    /// refuses a pod the webhook injects.
    #[test]
    fn the_default_tenant_falls_back_to_azure_tenant_id_as_in_run() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let binding = load_binding(
            "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {name: wi, namespace: team}\nspec:\n  trackingUri: https://mlflow.example.com\n  identity: {workloadIdentity: {clientId: 11111111-1111-1111-1111-111111111111}}\n",
        )
        .unwrap();
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team, labels: {mlflow-operator.io/track: 'true'}}\nspec: {containers: [{name: c, image: i}]}\n";
        let Command::Inject(args) =
            Cli::try_parse_from(["mlflow-operator", "inject", "--binding", "b.yaml"])
                .unwrap()
                .command
        else {
            panic!("not inject")
        };
        let tenant = "22222222-2222-2222-2222-222222222222";
        let env = |name: &str| (name == "AZURE_TENANT_ID").then(|| tenant.to_string());
        let offline = |defaults: &Defaults| {
            let o = Offline {
                binding: &binding,
                service_account: None,
                defaults,
            };
            o.documents(pod)
        };
        let (out, _) =
            offline(&defaults(&args, env)).expect("injected with the environment's tenant");
        assert!(out.contains(tenant), "{out}");
        let err = offline(&defaults(&args, |_| None)).expect_err("no tenant anywhere");
        assert!(err.contains("no tenant id"), "{err}");
    }
}
