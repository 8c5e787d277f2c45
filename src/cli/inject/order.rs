//! The mutated document with the keys of every mapping in the order the input had them, keys
//! the patch added after them. The planner's JSON maps are sorted (serde_json without
//! `preserve_order`, whose hashing cost the webhook about a tenth of each review), and a user
//! reads `inject`'s output against their own manifest. No crate re-applies one document's key
//! order to another, hence by hand.

use serde_yaml_ng::{Mapping, Value};

/// `mutated`, its mappings ordered like those of `input` at the same place. The patch only
/// appends to sequences, so items keep their indices and are matched by index.
pub fn like_input(input: &Value, mutated: Value) -> Value {
    match (input, mutated) {
        (Value::Mapping(like), Value::Mapping(mut got)) => {
            let mut out = Mapping::with_capacity(got.len());
            for (key, like_value) in like {
                if let Some(value) = got.shift_remove(key) {
                    out.insert(key.clone(), like_input(like_value, value));
                }
            }
            out.extend(got);
            Value::Mapping(out)
        }
        (Value::Sequence(like), Value::Sequence(got)) => {
            let mut like = like.iter();
            let ordered = got.into_iter().map(|item| match like.next() {
                Some(l) => like_input(l, item),
                None => item,
            });
            Value::Sequence(ordered.collect())
        }
        (_, mutated) => mutated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn keys(v: &Value) -> Vec<&str> {
        let map = v.as_mapping().unwrap();
        map.keys().map(|k| k.as_str().unwrap()).collect()
    }

    #[test]
    fn keeps_the_inputs_order_and_puts_new_keys_after() {
        let input =
            yaml("spec:\n  containers:\n  - name: c\n    image: i\n  volumes: []\nkind: Pod\n");
        let sorted = yaml(
            "kind: Pod\nmetadata: {annotations: {a: b}}\nspec:\n  containers:\n  - env: [{name: A, value: x}]\n    image: i\n    name: c\n  - image: j\n    name: d\n  volumes: []\n",
        );
        let got = like_input(&input, sorted);
        assert_eq!(keys(&got), ["spec", "kind", "metadata"]);
        let containers = got["spec"]["containers"].as_sequence().unwrap();
        assert_eq!(keys(&got["spec"]), ["containers", "volumes"]);
        assert_eq!(keys(&containers[0]), ["name", "image", "env"]);
        assert_eq!(
            keys(&containers[1]),
            ["image", "name"],
            "no input item: as it came"
        );
    }

    #[test]
    fn leaves_values_of_another_shape_as_the_patch_made_them() {
        for (input, mutated) in [
            ("a: [1]", "a: {b: 1}"),
            ("a: {b: 1}", "a: [1]"),
            ("a: 1", "a: {c: 2, b: 1}"),
            ("[1, 2]", "{x: 1}"),
        ] {
            let want = yaml(mutated);
            assert_eq!(like_input(&yaml(input), yaml(mutated)), want, "{input}");
        }
    }
}
