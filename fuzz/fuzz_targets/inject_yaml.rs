#![no_main]
//! `mlflow-operator inject`'s multi-document YAML input: `cargo +nightly fuzz run inject_yaml`.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::inject_yaml(data);
});
