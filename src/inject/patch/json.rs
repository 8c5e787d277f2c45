//! The patch as the JSON text the webhook sends, written op by op as the planner decides them:
//! no operation, pointer or copy of a value is built, and an entry every injected container gets
//! is encoded once per pod, then copied into each container's ops.
//!
//! The text is exactly what serializing the same ops as a `json_patch::Patch` gives (a property
//! test holds it), so the `inject` CLI and the tests can still decode and apply it.

use std::fmt;

use json_patch::jsonptr::Token;
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON patch (RFC 6902) as JSON text, its operations in the order the planner made them.
#[derive(Clone, PartialEq, Eq)]
pub struct Patch {
    json: Vec<u8>,
    len: usize,
}

impl Patch {
    /// No operations: the pod already has everything (reinvocation).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The JSON text, as the webhook sends it (base64-encoded).
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The operations, decoded: to apply the patch with [`json_patch::patch`] or read it.
    pub fn operations(&self) -> json_patch::Patch {
        serde_json::from_slice(&self.json).expect("the planner writes a JSON patch")
    }
}

impl From<&json_patch::Patch> for Patch {
    /// The patch of these operations.
    fn from(ops: &json_patch::Patch) -> Self {
        let json = serde_json::to_vec(ops).expect("a JSON patch serializes");
        Self {
            json,
            len: ops.len(),
        }
    }
}

impl Default for Patch {
    fn default() -> Self {
        Writer::new().finish()
    }
}

impl fmt::Display for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.json))
    }
}

impl fmt::Debug for Patch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Patch")
            .field(&String::from_utf8_lossy(&self.json))
            .finish()
    }
}

/// The kinds of operation the planner makes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Add,
    Replace,
}

/// A patch being written.
pub(crate) struct Writer {
    json: Vec<u8>,
    len: usize,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self {
            json: b"[".to_vec(),
            len: 0,
        }
    }

    /// Writes `op` of `value` at the pointer made of `path`'s tokens (unescaped), its members in
    /// `json_patch`'s order (op, path, value) so the text is what it writes. By hand: through
    /// serde's derive, each op's member names and pointer went through escaping, a third of the
    /// plan's time; and the pointer goes straight into the text, not into a string of its own.
    pub(crate) fn op(&mut self, op: Op, path: &[&str], value: &(impl Serialize + ?Sized)) {
        self.ops(op, path, std::iter::once(value));
    }

    /// [`Self::op`] for each of `values`, at one pointer: escaped once, then copied.
    pub(crate) fn ops<'v, V: Serialize + ?Sized + 'v>(
        &mut self,
        op: Op,
        path: &[&str],
        values: impl IntoIterator<Item = &'v V>,
    ) {
        let mut pointer = 0..0;
        for value in values {
            if self.len > 0 {
                self.json.push(b',');
            }
            self.json.extend_from_slice(match op {
                Op::Add => br#"{"op":"add","path":""#,
                Op::Replace => br#"{"op":"replace","path":""#,
            });
            match pointer.is_empty() {
                true => {
                    let start = self.json.len();
                    for token in path {
                        self.json.push(b'/');
                        self.string_contents(Token::new(*token).encoded());
                    }
                    pointer = start..self.json.len();
                }
                false => self.json.extend_from_within(pointer.clone()),
            }
            self.json.extend_from_slice(br#"","value":"#);
            serde_json::to_writer(&mut self.json, value).expect("a JSON value serializes");
            self.json.push(b'}');
            self.len += 1;
        }
    }

    /// `s` as the inside of a JSON string, escaped as serde_json escapes it.
    fn string_contents(&mut self, s: &str) {
        let plain = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\';
        if s.bytes().all(|b| plain(&b)) {
            return self.json.extend_from_slice(s.as_bytes());
        }
        let start = self.json.len();
        serde_json::to_writer(&mut self.json, s).expect("a string serializes");
        self.json.pop();
        self.json.remove(start);
    }

    /// Makes room for `additional` more bytes of ops at once, rather than growing step by step.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.json.reserve(additional);
    }

    pub(crate) fn finish(mut self) -> Patch {
        self.json.push(b']');
        Patch {
            json: self.json,
            len: self.len,
        }
    }
}

/// A wanted list entry: the value compared with the pod's entries, and, for an entry many
/// containers get, its JSON encoded once per pod ([`encode`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted<'a> {
    pub value: &'a Value,
    json: Option<&'a RawValue>,
}

impl<'a> Wanted<'a> {
    /// An entry written from its value (it goes into one place only).
    pub(crate) fn new(value: &'a Value) -> Self {
        Self { value, json: None }
    }

    /// The entries of `values` with their JSON, `encoded` from them.
    pub(crate) fn all_encoded(values: &'a [Value], encoded: &'a [Box<RawValue>]) -> Vec<Self> {
        let json = encoded.iter().map(|json| Some(&**json));
        let pair = |(value, json)| Self { value, json };
        values.iter().zip(json).map(pair).collect()
    }
}

impl Serialize for Wanted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json {
            Some(json) => json.serialize(s),
            None => self.value.serialize(s),
        }
    }
}

/// The JSON of each of `values`, to be copied into every op that adds it.
pub(crate) fn encode(values: &[Value]) -> Vec<Box<RawValue>> {
    let one = |v| serde_json::value::to_raw_value(v).expect("a JSON value serializes");
    values.iter().map(one).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_escaped_per_rfc_6901_and_as_serde_json_escapes_them() {
        for (tokens, want) in [
            (vec!["a", "b"], "/a/b"),
            (vec!["a/b"], "/a~1b"),
            (vec!["a~b"], "/a~0b"),
            (vec!["~/"], "/~0~1"),
            (vec![""], "/"),
            (vec!["a\"b\\"], "/a\"b\\"),
            (vec!["é\n\u{1f}\t"], "/é\n\u{1f}\t"),
            (
                vec!["metadata", "annotations", "mlflow-operator.io/injected"],
                "/metadata/annotations/mlflow-operator.io~1injected",
            ),
        ] {
            let mut w = Writer::new();
            w.op(Op::Add, &tokens, &json!(1));
            let patch = w.finish();
            let ops = patch.operations();
            assert_eq!(ops[0].path().to_string(), want, "{tokens:?}");
            // Escaped in the text exactly as serde_json escapes the pointer.
            assert_eq!(
                serde_json::to_vec(&ops).unwrap(),
                patch.json(),
                "{tokens:?}"
            );
        }
    }

    /// The text is what serializing the same ops as a `json_patch::Patch` gives, byte for byte,
    /// whether a value is written from itself or from its JSON encoded before.
    #[test]
    fn the_text_is_json_patchs_own() {
        let values = vec![
            json!({"name": "A", "value": "é\"\n"}),
            json!([1, {"b": null}]),
        ];
        let encoded = encode(&values);
        let wanted = Wanted::all_encoded(&values, &encoded);
        let mut w = Writer::new();
        w.op(Op::Add, &["spec", "containers", "0", "env"], &wanted[..]);
        w.op(Op::Add, &["spec", "volumes", "-"], &Wanted::new(&values[1]));
        w.op(
            Op::Replace,
            &["metadata", "annotations", "a/b"],
            &json!("x"),
        );
        w.ops(Op::Add, &["a~b\"", "-"], [&json!(1), &json!(2)]);
        let patch = w.finish();
        assert_eq!(patch.len(), 5);
        let decoded = patch.operations();
        assert_eq!(serde_json::to_vec(&decoded).unwrap(), patch.json());
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            json!([
                {"op": "add", "path": "/spec/containers/0/env", "value": values},
                {"op": "add", "path": "/spec/volumes/-", "value": values[1]},
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"},
                {"op": "add", "path": "/a~0b\"/-", "value": 1},
                {"op": "add", "path": "/a~0b\"/-", "value": 2},
            ])
        );
        let empty = Patch::default();
        assert!(empty.is_empty());
        assert_eq!(empty.json(), b"[]");
        assert_eq!(empty.operations(), json_patch::Patch(vec![]));
    }
}
