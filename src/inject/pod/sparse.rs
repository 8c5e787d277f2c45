//! Parsing a pod into JSON with only the fields [`super::read`] and the webhook look at: every
//! other field is skipped by the parser without being built. A pod's resources, probes,
//! tolerations and scheduling fields are most of its bytes, and the planner reads none of them.
//! Hand-written because serde's derive cannot keep a subtree as a `Value`
//! while skipping its siblings by a path table, and the planner's `Value` interface must stay
//! (the `inject` CLI and the tests hand it whole pods).
//!
//! The result equals the whole pod restricted to the kept paths; where a field has another JSON
//! type than a pod's (an object where an array belongs), it is kept whole, so the planner's
//! validation sees, and reports, exactly what it would on the whole pod.
//!
//! Of a container's env, only the entries the planner can read are built ([`EnvNames`]): a
//! container's own settings are most of a long env list, and building 200 of them as JSON maps
//! was most of the parse. The others are scanned and dropped; the list stays (so the patch still
//! appends to it), and the planner looks entries up by name only. Volume mounts and volumes
//! likewise: the planner reads only those that could take the place of its own (by name, or a
//! mount by path), and a pod's own, such as the projected ServiceAccount token, are most of
//! the rest of its bytes.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::binding::MlflowWorkspaceBinding;
use crate::inject::identity::{MOUNT_PATHS, VOLUMES};

mod entry;

/// The names of existing env entries the planner may read for pods of some bindings: every name
/// it injects or checks (all under these prefixes, or named below) and the bindings' own
/// `spec.env` names. A test holds the planner's names to it.
#[derive(Debug, Default)]
pub struct EnvNames<'b> {
    /// Keep every entry (the bindings are not known).
    all: bool,
    of_bindings: BTreeSet<&'b str>,
}

/// Prefixes of every variable the planner sets or checks (MLFLOW_*, AZURE_*, AZUREML_*).
const PLANNER_PREFIXES: [&str; 2] = ["MLFLOW_", "AZURE"];
/// The planner's names outside those prefixes (managed identity endpoints it checks for).
const PLANNER_NAMES: [&str; 2] = ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"];

impl<'b> EnvNames<'b> {
    /// Every entry kept.
    pub fn all() -> Self {
        Self {
            all: true,
            of_bindings: BTreeSet::new(),
        }
    }

    /// The names the planner may read for pods that any of `bindings` may inject.
    pub fn of(bindings: impl IntoIterator<Item = &'b MlflowWorkspaceBinding>) -> Self {
        let of_bindings = bindings
            .into_iter()
            .flat_map(|b| b.spec.env.iter().map(|e| e.name.as_str()))
            .collect();
        Self {
            all: false,
            of_bindings,
        }
    }

    pub(crate) fn keeps(&self, name: &str) -> bool {
        self.all
            || PLANNER_PREFIXES.iter().any(|p| name.starts_with(p))
            || PLANNER_NAMES.contains(&name)
            || self.of_bindings.contains(name)
    }

    /// Whether a volume mount so named (None: no name), at this path, is kept: one that may
    /// take the place of a mount the planner adds.
    pub(crate) fn keeps_mount(&self, name: Option<&str>, path: Option<&str>) -> bool {
        self.all
            || name.is_some_and(|n| VOLUMES.contains(&n))
            || path.is_some_and(|p| MOUNT_PATHS.contains(&p))
    }

    /// Whether a pod volume so named is kept: one that may take the place of the planner's.
    pub(crate) fn keeps_volume(&self, name: Option<&str>) -> bool {
        self.all || name.is_some_and(|n| VOLUMES.contains(&n))
    }
}

/// Which parts of a JSON value are kept.
enum Shape {
    /// All of it.
    Whole,
    /// Of an object, these fields, each with its own shape; the others are skipped.
    Fields(&'static [(&'static str, Shape)]),
    /// Of an array, every item with this shape.
    Each(&'static Shape),
    /// Of an array of entries, those [`EnvNames`] keeps.
    Kept(List),
}

/// A list the planner looks entries up in, and so which of its entries it may read.
#[derive(Clone, Copy)]
enum List {
    Env,
    Mounts,
    Volumes,
}

/// What the planner reads of a container (`pod::read`, `patch`): entries of env, mounts and
/// volumes are compared whole.
static CONTAINER: Shape = Shape::Fields(&[
    ("name", Shape::Whole),
    ("image", Shape::Whole),
    ("env", Shape::Kept(List::Env)),
    ("envFrom", Shape::Whole),
    ("volumeMounts", Shape::Kept(List::Mounts)),
]);

/// What the planner reads of an owner reference (`pod::controller_owner`).
static OWNER: Shape = Shape::Fields(&[
    ("kind", Shape::Whole),
    ("name", Shape::Whole),
    ("controller", Shape::Whole),
]);

/// What the planner and the webhook read of a pod.
static POD: Shape = Shape::Fields(&[
    (
        "metadata",
        Shape::Fields(&[
            ("namespace", Shape::Whole),
            ("labels", Shape::Whole),
            ("annotations", Shape::Whole),
            ("ownerReferences", Shape::Each(&OWNER)),
        ]),
    ),
    (
        "spec",
        Shape::Fields(&[
            ("serviceAccountName", Shape::Whole),
            ("serviceAccount", Shape::Whole),
            ("volumes", Shape::Kept(List::Volumes)),
            ("containers", Shape::Each(&CONTAINER)),
            ("initContainers", Shape::Each(&CONTAINER)),
        ]),
    ),
]);

/// Parses a pod (JSON text) as the planner reads it, building of each container's env the
/// entries `env` keeps.
pub fn parse(pod: &str, env: &EnvNames<'_>) -> serde_json::Result<Value> {
    let mut d = serde_json::Deserializer::from_str(pod);
    let v = seed(env).deserialize(&mut d)?;
    d.end()?;
    Ok(v)
}

/// Reads a pod as [`parse`] does, as a value inside a larger document (an AdmissionReview's
/// `request.object`), so that the document is read once.
pub fn seed<'n, 'de>(env: &'n EnvNames<'n>) -> impl DeserializeSeed<'de, Value = Value> + 'n {
    Kept(&POD, env)
}

/// Parses one value keeping what its shape says.
#[derive(Clone, Copy)]
struct Kept<'n>(&'static Shape, &'n EnvNames<'n>);

impl<'de> DeserializeSeed<'de> for Kept<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Shape::Whole => Value::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Kept<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        if let (Shape::Kept(list), false) = (self.0, self.1.all) {
            let mut members = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                let kept = entry::read(*list, item.get(), self.1, &mut members);
                items.extend(kept.map_err(de::Error::custom)?);
            }
            return Ok(Value::Array(items));
        }
        let item = match self.0 {
            Shape::Each(item) => Kept(item, self.1),
            _ => Kept(&Shape::Whole, self.1),
        };
        while let Some(v) = seq.next_element_seed(item)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let Shape::Fields(fields) = self.0 else {
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                out.insert(k, v);
            }
            return Ok(Value::Object(out));
        };
        while let Some(field) = map.next_key_seed(FieldOf(fields))? {
            match field {
                Some((name, shape)) => {
                    let v = map.next_value_seed(Kept(shape, self.1))?;
                    out.insert((*name).to_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads an object's key as one of `fields`, or None, without allocating it.
struct FieldOf(&'static [(&'static str, Shape)]);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Option<&'static (&'static str, Shape)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldOf {
    type Value = Option<&'static (&'static str, Shape)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(name, _)| *name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sparse(v: &Value) -> Value {
        parse(&v.to_string(), &EnvNames::all()).unwrap()
    }

    #[test]
    fn keeps_what_the_planner_reads_and_drops_the_rest() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                "envFrom": [{"secretRef": {"name": "s"}}], "volumeMounts": [{"name": "v", "mountPath": "/v"}]});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        let meta = json!({"namespace": "n", "labels": {"a": "b"}, "annotations": {"x": "y"},
            "ownerReferences": [{"kind": "Job", "name": "j", "controller": true}]});
        let spec = |c: Value| {
            json!({"serviceAccountName": "sa", "serviceAccount": "old", "volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [c.clone()], "initContainers": [c]})
        };
        let mut whole_meta = meta.clone();
        whole_meta["ownerReferences"][0]["uid"] = json!("u");
        whole_meta["ownerReferences"][0]["apiVersion"] = json!("batch/v1");
        whole_meta["managedFields"] = json!([{"manager": "kcm", "fieldsV1": {"f:spec": {}}}]);
        whole_meta["generateName"] = json!("p-");
        let mut whole_spec = spec(c(
            json!({"resources": {"limits": {"cpu": "1"}}, "args": ["a\"b"]}),
        ));
        whole_spec["nodeSelector"] = json!({"k": "v"});
        let whole = json!({"apiVersion": "v1", "kind": "Pod", "metadata": whole_meta,
            "spec": whole_spec, "status": {"phase": "Pending"}});
        assert_eq!(
            sparse(&whole),
            json!({"metadata": meta, "spec": spec(c(json!({})))})
        );
    }

    #[test]
    fn a_field_of_another_type_is_kept_whole() {
        // (case, pod): what the planner must see as it is, to refuse it with the same words.
        for (case, pod) in [
            ("not an object", json!([1, {"a": 2}])),
            ("scalar", json!("pod")),
            ("null", json!(null)),
            ("spec an array", json!({"spec": [{"x": 1}]})),
            (
                "containers an object",
                json!({"spec": {"containers": {"name": "c", "x": 1}}}),
            ),
            ("container a string", json!({"spec": {"containers": ["c"]}})),
            (
                "metadata a number",
                json!({"metadata": 1.5, "spec": {"containers": []}}),
            ),
            (
                "numbers",
                json!({"metadata": {"labels": {"a": -1, "b": 2, "c": 0.5}}}),
            ),
        ] {
            assert_eq!(sparse(&pod), pod, "{case}");
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        for text in [
            "{",
            r#"{"spec": {"containers": [}"#,
            r#"{"a": tru}"#,
            "{} {}",
        ] {
            assert!(parse(text, &EnvNames::all()).is_err(), "{text}");
        }
    }

    #[test]
    fn of_a_container_env_only_what_the_planner_may_read_is_built() {
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"trackingUri": "http://m", "env": [{"name": "TEAM_SETTING", "value": "x"}]}
        }))
        .unwrap();
        // (entry, kept)
        let entries = [
            (json!({"name": "MLFLOW_TRACKING_URI", "value": "u"}), true),
            (json!({"name": "AZURE_CLIENT_ID", "value": "c"}), true),
            (json!({"name": "AZUREML_CURRENT_CLOUD", "value": "c"}), true),
            (json!({"name": "MSI_ENDPOINT", "value": "e"}), true),
            (json!({"name": "TEAM_SETTING", "value": "y"}), true),
            (json!({"name": "SETTING_1", "value": "v"}), false),
            (
                json!({"name": "PATH", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}),
                false,
            ),
            (json!({"value": "no name"}), false),
            (json!({"name": null}), false),
            (json!({"name": 7}), true),
            (json!("not an object"), true),
        ];
        let env: Vec<Value> = entries.iter().map(|(e, _)| e.clone()).collect();
        let pod = json!({"spec": {"containers": [{"name": "c", "env": env}]}});
        let got = parse(&pod.to_string(), &EnvNames::of([&b])).unwrap();
        let kept: Vec<Value> = entries
            .iter()
            .filter(|(_, kept)| *kept)
            .map(|(e, _)| e.clone())
            .collect();
        assert_eq!(got["spec"]["containers"][0]["env"], json!(kept));
        let all = parse(&pod.to_string(), &EnvNames::all()).unwrap();
        assert_eq!(all["spec"]["containers"][0]["env"], json!(env));
    }

    /// Of mounts and volumes, only those that may take the place of the planner's are built.
    #[test]
    fn a_mount_or_volume_is_kept_when_it_may_take_the_planners_place() {
        // (mount, kept; the volume of the same members, mountPath read as hostPath, kept)
        for (mount, kept, volume_kept) in [
            (r#"{"name": "data", "mountPath": "/data"}"#, false, false),
            (
                r#"{"name": "mlflow-operator-azure-token", "mountPath": "/x"}"#,
                true,
                true,
            ),
            (
                r#"{"name": "x", "mountPath": "/var/run/secrets/mlflow-operator/azure"}"#,
                true,
                false,
            ),
            (
                r#"{"name": "x", "mountPath": "/var/run/secrets/mlflow-operator/azure-sp"}"#,
                true,
                false,
            ),
            (
                r#"{"mountPath": "/var/run/secrets/mlflow-operator/azure", "readOnly": true}"#,
                true,
                false,
            ),
            (
                r#"{"name": "x", "mountPath": "/var/run/secrets/mlflow-operator"}"#,
                false,
                false,
            ),
            (r#"{"name": null, "mountPath": null}"#, false, false),
            (r#"{"readOnly": true}"#, false, false),
            // Without the planner's mark (and without escapes) an entry of any shape is dropped:
            // none of its members can equal a name or path of the planner's.
            (r#"{"name": "x", "mountPath": 7}"#, false, false),
            (
                r#"{"name": "mlflow-operator", "mountPath": 7}"#,
                true,
                false,
            ),
            (
                r#"{"name": ["mlflow-operator-azure-token"], "mountPath": "/x"}"#,
                true,
                true,
            ),
            (
                r#"{"name": "mlflow-operator-azure-sp\u002dcert", "mountPath": "/x"}"#,
                true,
                true,
            ),
            (r#"{"name": "data\u002dx", "mountPath": "/x"}"#, true, true),
            (r#"{"name": "x", "name": "y"}"#, false, false),
            (r#"{"name": "x", "name": "mlflow-operator"}"#, true, true),
            (r#""a string""#, false, false),
            (r#""mlflow-operator""#, true, true),
        ] {
            let volume = mount.replace("mountPath", "hostPath");
            let text = format!(
                r#"{{"spec": {{"volumes": [{volume}], "containers": [{{"name": "c", "volumeMounts": [{mount}]}}]}}}}"#
            );
            let got = parse(&text, &EnvNames::default()).unwrap();
            let whole: Value = serde_json::from_str(&text).unwrap();
            let want = |list: &Value, kept: bool| if kept { list.clone() } else { json!([]) };
            let mounts = &whole["spec"]["containers"][0]["volumeMounts"];
            assert_eq!(
                got["spec"]["containers"][0]["volumeMounts"],
                want(mounts, kept),
                "{mount}"
            );
            let volumes = &whole["spec"]["volumes"];
            assert_eq!(
                got["spec"]["volumes"],
                want(volumes, volume_kept),
                "{volume}"
            );
        }
    }

    /// What only the text can say: escapes, a repeated name, where the name is.
    #[test]
    fn an_env_entry_is_kept_by_its_name_as_the_whole_pod_reads_it() {
        // (entry, kept)
        for (entry, kept) in [
            (r#"{"value": "v", "name": "MLFLOW_X"}"#, true),
            (r#"{"value": "v", "name": "SETTING"}"#, false),
            (r#"{"name": "MLFLOW\u005fX", "value": "v"}"#, true),
            (r#"{"name": "SETTING\u005fX", "value": "v"}"#, false),
            (r#"{"n\u0061me": "MLFLOW_X", "value": "v"}"#, true),
            (r#"{"n\u0061me": "SETTING", "value": "v"}"#, false),
            (r#"{"name": "SETTING", "name": "MLFLOW_X"}"#, true),
            (r#"{"name": "SETTING", "name": "OTHER"}"#, true),
            (r#"{"name":"SETTING","name":"MLFLOW_X"}"#, true),
            (r#"{ "name" : "MLFLOW_X" , "value" : "v" }"#, true),
            ("{\n\t\"name\":\r\"SETTING\"\n}", false),
            (r#"{"value": "a}\"b", "name": "SETTING"}"#, false),
            (r#"{"value": "a}b],", "name": "SETTING"}"#, false),
            (
                r#"{"value": "\"name\": \"MLFLOW_X\"", "name": "SETTING"}"#,
                false,
            ),
            (
                r#"{"value": "{\"name\": \"MLFLOW_X\"}", "name": "SETTING"}"#,
                false,
            ),
            (
                r#"{"valueFrom": {"name": "MLFLOW_X", "k": ["}", {"a": []}]}, "name": "SETTING"}"#,
                false,
            ),
            (
                r#"{"valueFrom": {"fieldRef": {"fieldPath": "x"}}, "name": "MLFLOW_X"}"#,
                true,
            ),
            (
                r#"{"value": [1, 2.5e3, true, null], "name": "SETTING"}"#,
                false,
            ),
            (r#"{"value": -1, "name": "SETTING", "x": {}}"#, false),
            (r#"{"name": "", "value": "v"}"#, false),
            (r#"{"name": "MLFLOW_é", "value": "ü"}"#, true),
            (r#"{"name": "ÉTÉ", "value": "ü"}"#, false),
            (r#"{"names": "MLFLOW_X", "nam": "MLFLOW_X"}"#, false),
            (r#"{"name": 0}"#, true),
            (r#"{"name": false}"#, true),
            (r#"{"name": []}"#, true),
            (r#"{"name": true}"#, true),
            (r#"{"name": {"a": 1}}"#, true),
            (r#"{"name": null, "value": "v"}"#, false),
            (r#"{}"#, false),
            (r#"["SETTING"]"#, true),
            (r#"null"#, true),
            (r#"1.5"#, true),
        ] {
            let text =
                format!(r#"{{"spec": {{"containers": [{{"name": "c", "env": [{entry}]}}]}}}}"#);
            let got = parse(&text, &EnvNames::default()).unwrap();
            let whole: Value = serde_json::from_str(&text).unwrap();
            let want = match kept {
                true => whole["spec"]["containers"][0]["env"].clone(),
                false => json!([]),
            };
            assert_eq!(got["spec"]["containers"][0]["env"], want, "{entry}");
        }
    }
}
