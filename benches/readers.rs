//! Which JSON reader is fastest on the three AdmissionReviews of `benches/load` (the small pod,
//! the 10-container training pod, the 200-env pod): skipping everything (what a webhook that
//! only validates the request pays, the reading floor's work), and building a tree of it.
//! sonic-rs is the webhook's own reader of a review (its tree); simd-json is built only for this
//! benchmark:
//!
//!   cargo bench --features bench-simd-readers --bench readers
//!
//! With `RUSTFLAGS="-C target-cpu=native"` (and its own target directory) sonic-rs uses AVX2.

use divan::Bencher;
use serde::de::IgnoredAny;

#[path = "load/payloads.rs"]
#[allow(dead_code)]
mod payloads;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

const PAYLOADS: [&str; 3] = ["small pod", "10-container training pod", "200-env pod"];

fn body(payload: &str) -> Vec<u8> {
    let all = payloads::all("team-a");
    let p = all
        .into_iter()
        .find(|p| p.name == payload)
        .expect("a payload of benches/load");
    p.body.to_vec()
}

#[divan::bench(args = PAYLOADS)]
fn serde_json_skip(bencher: Bencher, payload: &str) {
    let body = body(payload);
    bencher.bench_local(|| serde_json::from_slice::<IgnoredAny>(divan::black_box(&body)).unwrap());
}

#[divan::bench(args = PAYLOADS)]
fn serde_json_value(bencher: Bencher, payload: &str) {
    let body = body(payload);
    bencher.bench_local(|| {
        serde_json::from_slice::<serde_json::Value>(divan::black_box(&body)).unwrap()
    });
}

#[divan::bench(args = PAYLOADS)]
fn sonic_rs_skip(bencher: Bencher, payload: &str) {
    let body = body(payload);
    bencher.bench_local(|| sonic_rs::from_slice::<IgnoredAny>(divan::black_box(&body)).unwrap());
}

#[divan::bench(args = PAYLOADS)]
fn sonic_rs_value(bencher: Bencher, payload: &str) {
    let body = body(payload);
    bencher
        .bench_local(|| sonic_rs::from_slice::<sonic_rs::Value>(divan::black_box(&body)).unwrap());
}

#[divan::bench(args = PAYLOADS)]
fn sonic_rs_lazy_object(bencher: Bencher, payload: &str) {
    let body = body(payload);
    bencher
        .bench_local(|| sonic_rs::get(divan::black_box(&body[..]), ["request", "object"]).unwrap());
}

#[divan::bench(args = PAYLOADS)]
fn simd_json_tape(bencher: Bencher, payload: &str) {
    let body = body(payload);
    let mut buf = body.clone();
    bencher.bench_local(|| {
        buf.copy_from_slice(&body);
        simd_json::to_tape(divan::black_box(&mut buf))
            .map(drop)
            .unwrap()
    });
}

#[divan::bench(args = PAYLOADS)]
fn simd_json_borrowed_value(bencher: Bencher, payload: &str) {
    let body = body(payload);
    let mut buf = body.clone();
    bencher.bench_local(|| {
        buf.copy_from_slice(&body);
        simd_json::to_borrowed_value(divan::black_box(&mut buf))
            .map(drop)
            .unwrap()
    });
}
