//! The least a reader of what the planner reads can cost on sonic-rs's own tree: the whole review
//! parsed by sonic-rs (its DOM, which the third stop measured faster than serde_json's skip of
//! the same bytes), then the webhook's fields taken from it as borrowed strings, each object
//! walked once with the last of a repeated key winning (as serde_json's maps decide). It plans
//! nothing and validates only types: a bound on reading, measured before writing such a reader.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

#[derive(Default)]
pub struct Review<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub operation: &'a str,
    pub labels: Vec<(&'a str, &'a str)>,
    pub annotations: Vec<(&'a str, &'a str)>,
    pub owner: Option<(&'a str, &'a str)>,
    pub service_account: &'a str,
    pub volumes: Vec<&'a Value>,
    pub containers: Vec<Container<'a>>,
}

#[derive(Default)]
pub struct Container<'a> {
    pub name: &'a str,
    pub image: Option<&'a str>,
    pub env: Vec<&'a Value>,
    pub has_env: bool,
    pub has_env_from: bool,
    pub mounts: Vec<&'a Value>,
}

/// The names the planner reads (the webhook's `EnvNames` for a binding without `spec.env`).
fn kept_env(name: &str) -> bool {
    name.starts_with("MLFLOW_")
        || name.starts_with("AZURE")
        || name == "IDENTITY_ENDPOINT"
        || name == "MSI_ENDPOINT"
}

fn members(v: &Value) -> impl Iterator<Item = (&str, &Value)> {
    v.as_object().into_iter().flat_map(|o| o.iter())
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flat_map(|a| a.iter())
}

fn strings(v: &Value) -> Vec<(&str, &str)> {
    members(v)
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
        .collect()
}

fn named(entry: &Value, keep: impl Fn(&str) -> bool) -> Option<&Value> {
    let mut name = None;
    for (k, v) in members(entry) {
        if k == "name" {
            name = v.as_str();
        }
    }
    keep(name?).then_some(entry)
}

fn container(c: &Value) -> Container<'_> {
    let mut out = Container::default();
    for (k, v) in members(c) {
        match k {
            "name" => out.name = v.as_str().unwrap_or_default(),
            "image" => out.image = v.as_str(),
            "env" => {
                out.has_env = v.is_array();
                out.env = items(v).filter_map(|e| named(e, kept_env)).collect();
            }
            "envFrom" => out.has_env_from = v.as_array().is_some_and(|a| !a.is_empty()),
            "volumeMounts" => {
                let marked = |n: &str| n.contains("mlflow-operator");
                out.mounts = items(v).filter_map(|m| named(m, marked)).collect();
            }
            _ => {}
        }
    }
    out
}

fn metadata<'a>(m: &'a Value, out: &mut Review<'a>) {
    for (k, v) in members(m) {
        match k {
            "labels" => out.labels = strings(v),
            "annotations" => out.annotations = strings(v),
            "ownerReferences" => {
                out.owner = items(v)
                    .find(|r| r.get("controller").and_then(|c| c.as_bool()) == Some(true))
                    .and_then(|r| Some((r.get("kind")?.as_str()?, r.get("name")?.as_str()?)));
            }
            _ => {}
        }
    }
}

fn spec<'a>(s: &'a Value, out: &mut Review<'a>) {
    for (k, v) in members(s) {
        match k {
            "serviceAccountName" => out.service_account = v.as_str().unwrap_or_default(),
            "volumes" => {
                let marked = |n: &str| n.contains("mlflow-operator");
                out.volumes = items(v).filter_map(|e| named(e, marked)).collect();
            }
            "containers" | "initContainers" => out.containers.extend(items(v).map(container)),
            _ => {}
        }
    }
}

/// The review's tree, parsed once; [`view`] borrows from it.
pub fn parse(body: &[u8]) -> Value {
    let text = std::str::from_utf8(body).expect("a UTF-8 review");
    sonic_rs::from_str(text).expect("a valid review")
}

pub fn view(review: &Value) -> Review<'_> {
    let mut out = Review::default();
    for (k, v) in members(review.get("request").expect("a request")) {
        match k {
            "uid" => out.uid = v.as_str().unwrap_or_default(),
            "namespace" => out.namespace = v.as_str().unwrap_or_default(),
            "operation" => out.operation = v.as_str().unwrap_or_default(),
            "object" => {
                for (k, v) in members(v) {
                    match k {
                        "metadata" => metadata(v, &mut out),
                        "spec" => spec(v, &mut out),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}
