//! One entry of a list the planner looks entries up in (env, volume mounts, volumes): only an
//! entry [`EnvNames`] keeps is built. Most entries are the pod's own, dropped: the common entry
//! (an object without escapes) is judged from its text alone, which serde has already
//! validated. Any other env entry is read by serde, its members scanned, not built, until its
//! name is known; any other mount or volume is kept whole.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use memchr::memmem;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{EnvNames, Kept, List, Shape};

/// An entry's members as scanned: each key, and its value's JSON text.
pub(super) type Members<'de> = Vec<(Cow<'de, str>, &'de RawValue)>;

/// Reads one entry of `list` from its (valid JSON) text: the entry when it is kept, None when
/// it is dropped.
pub(super) fn read<'de>(
    list: List,
    text: &'de str,
    env: &EnvNames<'_>,
    members: &mut Members<'de>,
) -> serde_json::Result<Option<Value>> {
    if matches!(list, List::Mounts | List::Volumes) && !env.all && unmarked(text) {
        return Ok(None);
    }
    let dropped = match list {
        List::Env => simple(text, ["\"name\""]).is_some_and(|[name]| !kept_by(name, env)),
        List::Mounts => simple(text, ["\"name\"", "\"mountPath\""])
            .and_then(|[name, path]| Some(!env.keeps_mount(string(name)?, string(path)?)))
            .unwrap_or(false),
        List::Volumes => simple(text, ["\"name\""])
            .and_then(|[name]| Some(!env.keeps_volume(string(name)?)))
            .unwrap_or(false),
    };
    match (dropped, list) {
        (true, _) => Ok(None),
        (false, List::Env) => {
            let mut d = serde_json::Deserializer::from_str(text);
            Entry::new(env, members).deserialize(&mut d)
        }
        (false, _) => serde_json::from_str(text).map(Some),
    }
}

/// Every name and path by which a mount or volume takes the place of one the planner adds
/// holds this text ([`crate::inject::identity::VOLUMES`], [`crate::inject::identity::MOUNT_PATHS`]).
const MARK: &str = "mlflow-operator";

/// A mount or volume whose text, without escapes, does not hold [`MARK`]: none of its members
/// can equal a name or path of the planner's, whatever its shape, so the planner never reads it.
/// Most of a pod's own are so judged without walking their members (the projected
/// ServiceAccount token volume is the longest entry of a small pod).
fn unmarked(text: &str) -> bool {
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(MARK));
    let b = text.as_bytes();
    memchr::memchr(b'\\', b).is_none() && FINDER.find(b).is_none()
}

/// Of an object without escapes, the text of the value of each of `keys` (quoted, as in the
/// text), None where absent; None when the text says nothing simple (not such an object, or a
/// repeated key). Without escapes, keys and strings are what the text shows, and a string ends
/// at its next quote.
fn simple<'t, const N: usize>(text: &'t str, keys: [&str; N]) -> Option<[Option<&'t str>; N]> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') || b.contains(&b'\\') {
        return None;
    }
    let (mut values, mut i) = ([None; N], 1);
    loop {
        i = space(b, i);
        if b.get(i)? == &b'}' {
            return Some(values);
        }
        let key_end = value_end(b, i)?;
        let key = text.get(i..key_end)?;
        i = space(b, key_end);
        (b.get(i)? == &b':').then_some(())?;
        i = space(b, i + 1);
        let end = value_end(b, i)?;
        if let Some(k) = keys.iter().position(|k| *k == key)
            && values[k].replace(text.get(i..end)?).is_some()
        {
            return None;
        }
        i = space(b, end);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(values),
            _ => return None,
        }
    }
}

/// A member's value text as a string without escapes: Some(None) when absent or null, None
/// when it is not a string.
fn string(value: Option<&str>) -> Option<Option<&str>> {
    match value {
        None | Some("null") => Some(None),
        Some(v) => v.strip_prefix('"')?.strip_suffix('"').map(Some),
    }
}

/// Whether an env entry whose one name's value has this text (or which has no name) is kept,
/// as [`kept`] judges it.
fn kept_by(name: Option<&str>, env: &EnvNames<'_>) -> bool {
    match string(name) {
        Some(None) => false,
        Some(Some(name)) => env.keeps(name),
        None => true,
    }
}

fn space(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
    {
        i += 1;
    }
    i
}

/// Where the value that starts at `i` ends, in valid JSON without escapes.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let quote = |from: usize| Some(from + memchr::memchr(b'"', b.get(from..)?)?);
    match *b.get(i)? {
        b'"' => Some(quote(i + 1)? + 1),
        open @ (b'{' | b'[') => {
            // Valid JSON nests the other kind of bracket in pairs: counting this kind suffices.
            let close = if open == b'{' { b'}' } else { b']' };
            let (mut depth, mut j) = (0usize, i);
            loop {
                j += memchr::memchr3(b'"', open, close, b.get(j..)?)?;
                match *b.get(j)? {
                    b'"' => j = quote(j + 1)?,
                    c if c == open => depth += 1,
                    _ if depth == 1 => return Some(j + 1),
                    _ => depth -= 1,
                }
                j += 1;
            }
        }
        _ => {
            let rest = b.get(i..)?;
            let len = rest.iter().position(|c| b",}] \n\r\t".contains(c));
            Some(i + len.unwrap_or(rest.len()))
        }
    }
}

/// Reads one env entry: the entry when it is kept, None when it is dropped. An entry without
/// a name (absent or null) is dropped, the planner reading entries by name only; one whose name
/// cannot be read as a string (another type, a repeated `name`) is kept, so the planner sees it
/// as in the whole pod; so is an entry that is not an object.
struct Entry<'a, 'de> {
    env: &'a EnvNames<'a>,
    /// Reused from entry to entry.
    members: &'a mut Members<'de>,
}

impl<'a, 'de> Entry<'a, 'de> {
    fn new(env: &'a EnvNames<'a>, members: &'a mut Members<'de>) -> Self {
        Self { env, members }
    }
}

impl<'de> DeserializeSeed<'de> for Entry<'_, 'de> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

/// An entry of another JSON type than an object, built whole as [`Kept`] builds any value.
fn whole<'n>(env: &'n EnvNames<'n>) -> Kept<'n> {
    Kept(&Shape::Whole, env)
}

impl<'de> Visitor<'de> for Entry<'_, 'de> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an env entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        self.members.clear();
        while let Some(key) = map.next_key_seed(Key)? {
            let value: &'de RawValue = map.next_value()?;
            self.members.push((key, value));
        }
        if !kept(self.members, self.env) {
            return Ok(None);
        }
        let mut entry = Map::new();
        for (key, value) in self.members.iter() {
            let value = serde_json::from_str(value.get()).map_err(de::Error::custom)?;
            entry.insert(key.to_string(), value);
        }
        Ok(Some(Value::Object(entry)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
        whole(self.env).visit_seq(seq).map(Some)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        whole(self.env).visit_bool(v).map(Some)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        whole(self.env).visit_i64(v).map(Some)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        whole(self.env).visit_u64(v).map(Some)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        whole(self.env).visit_f64(v).map(Some)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        whole(self.env).visit_str(v).map(Some)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        whole(self.env).visit_unit().map(Some)
    }
}

/// Whether an entry of these members is kept, by its name.
fn kept(members: &Members<'_>, env: &EnvNames<'_>) -> bool {
    let mut names = members.iter().filter(|(key, _)| key == "name");
    match (names.next(), names.next()) {
        (None, _) => false,
        (Some(_), Some(_)) => true,
        (Some((_, name)), None) => match name.get().as_bytes().first() {
            Some(b'n') => false,
            Some(b'"') => text(name).is_none_or(|name| env.keeps(&name)),
            _ => true,
        },
    }
}

/// A JSON string's text. By hand when it has no escapes (then its text is what the quotes
/// hold): parsing each name again was a tenth of the parse of a long env list.
fn text(json: &RawValue) -> Option<Cow<'_, str>> {
    let quoted = json.get().strip_prefix('"')?.strip_suffix('"')?;
    if !quoted.contains('\\') {
        return Some(Cow::Borrowed(quoted));
    }
    serde_json::from_str(json.get()).ok().map(Cow::Owned)
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::identity::{MOUNT_PATHS, VOLUMES};

    #[test]
    fn every_name_and_path_of_the_planners_holds_the_mark() {
        for name in VOLUMES.iter().chain(&MOUNT_PATHS) {
            assert!(name.contains(MARK), "{name}");
        }
    }

    #[test]
    fn an_entry_is_unmarked_only_without_the_mark_and_without_escapes() {
        // (text, unmarked)
        for (text, want) in [
            (r#"{"name": "data", "emptyDir": {}}"#, true),
            (r#"{"name": 7, "mountPath": "/x"}"#, true),
            (r#""a string""#, true),
            (r#"{"name": "mlflow-operator-azure-token"}"#, false),
            (
                r#"{"name": "x", "mountPath": "/var/run/secrets/mlflow-operator/azure"}"#,
                false,
            ),
            (
                r#"{"name": "x", "hostPath": {"path": "/mlflow-operator"}}"#,
                false,
            ),
            (r#"{"name": "mlflow\u002doperator-azure-token"}"#, false),
            (r#"{"name": "data", "x": "a\"b"}"#, false),
        ] {
            assert_eq!(unmarked(text), want, "{text}");
        }
    }

    #[test]
    fn simple_reads_the_members_of_an_object_without_escapes() {
        // (text, the values of "name" and "mountPath", as texts)
        let cases: [(&str, Option<[Option<&str>; 2]>); 12] = [
            (
                r#"{"name": "a", "mountPath": "/p"}"#,
                Some([Some(r#""a""#), Some(r#""/p""#)]),
            ),
            (r#"{}"#, Some([None, None])),
            (r#"{ }"#, Some([None, None])),
            (
                r#"{"x": {"name": "b", "y": [{"]": "}"}]}, "name": "a"}"#,
                Some([Some(r#""a""#), None]),
            ),
            (
                r#"{"x": [[], {"a": ["{"]}], "mountPath": null}"#,
                Some([None, Some("null")]),
            ),
            (
                r#"{"name": 12.5e3, "mountPath": true}"#,
                Some([Some("12.5e3"), Some("true")]),
            ),
            (
                r#"{"name": ["a", {"b": "]"}]}"#,
                Some([Some(r#"["a", {"b": "]"}]"#), None]),
            ),
            (r#"{"name":"a","name":"b"}"#, None),
            (r#"{"name": "a\"b"}"#, None),
            (r#"["name", "a"]"#, None),
            (r#""name""#, None),
            (r#"{"names": "a", "mountPaths": "/p"}"#, Some([None, None])),
        ];
        for (text, want) in cases {
            assert_eq!(
                simple(text, [r#""name""#, r#""mountPath""#]),
                want,
                "{text}"
            );
        }
    }
}
