//! Parsing a pod into JSON with only the fields [`super::read`] and the webhook look at: every
//! other field is skipped by the parser without being built. A training pod's resources, probes,
//! commands and managedFields are most of its bytes, and building them into a tree was most of
//! an admission's CPU. Hand-written because serde's derive cannot keep a subtree as a `Value`
//! while skipping its siblings by a path table, and the planner's `Value` interface must stay
//! (the `inject` CLI and the tests hand it whole pods).
//!
//! The result equals the whole pod restricted to the kept paths; where a field has another JSON
//! type than a pod's (an object where an array belongs), it is kept whole, so the planner's
//! validation sees, and reports, exactly what it would on the whole pod.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// Which parts of a JSON value are kept.
enum Shape {
    /// All of it.
    Whole,
    /// Of an object, these fields, each with its own shape; the others are skipped.
    Fields(&'static [(&'static str, Shape)]),
    /// Of an array, every item with this shape.
    Each(&'static Shape),
}

/// What the planner reads of a container (`pod::read`, `patch`): entries of env, mounts and
/// volumes are compared whole.
static CONTAINER: Shape = Shape::Fields(&[
    ("name", Shape::Whole),
    ("image", Shape::Whole),
    ("env", Shape::Whole),
    ("envFrom", Shape::Whole),
    ("volumeMounts", Shape::Whole),
]);

/// What the planner and the webhook read of a pod.
static POD: Shape = Shape::Fields(&[
    (
        "metadata",
        Shape::Fields(&[
            ("namespace", Shape::Whole),
            ("labels", Shape::Whole),
            ("annotations", Shape::Whole),
            ("ownerReferences", Shape::Whole),
        ]),
    ),
    (
        "spec",
        Shape::Fields(&[
            ("serviceAccountName", Shape::Whole),
            ("serviceAccount", Shape::Whole),
            ("volumes", Shape::Whole),
            ("containers", Shape::Each(&CONTAINER)),
            ("initContainers", Shape::Each(&CONTAINER)),
        ]),
    ),
]);

/// A pod as the planner reads it, parsed from an AdmissionReview's `request.object`.
#[derive(Debug, Default)]
pub struct SparsePod(pub Value);

impl<'de> Deserialize<'de> for SparsePod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Kept(&POD).deserialize(d).map(SparsePod)
    }
}

/// Parses one value keeping what its shape says.
#[derive(Clone, Copy)]
struct Kept(&'static Shape);

impl<'de> DeserializeSeed<'de> for Kept {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Shape::Whole => Value::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Kept {
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
        let item = match self.0 {
            Shape::Each(item) => Kept(item),
            _ => Kept(&Shape::Whole),
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
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
                    let v = map.next_value_seed(Kept(shape))?;
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
        serde_json::from_slice::<SparsePod>(&serde_json::to_vec(v).unwrap())
            .unwrap()
            .0
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
        for body in [
            &b"{"[..],
            b"{\"spec\": {\"containers\": [}",
            b"{\"a\": tru}",
        ] {
            assert!(serde_json::from_slice::<SparsePod>(body).is_err());
        }
    }
}
