#![no_main]
//! AdmissionReview decoding and planning: `cargo +nightly fuzz run admission_review`.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::admission_review(data);
});
