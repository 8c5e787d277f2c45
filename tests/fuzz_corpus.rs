//! The fuzz targets' checks (`fuzz/checks.rs`) over the committed seed corpus, on stable Rust:
//! the targets keep compiling against the library and every seed keeps passing. The fuzzing
//! itself runs with `cargo +nightly fuzz run <target>` (see fuzz/README.md).

#[path = "../fuzz/checks.rs"]
mod checks;

use std::collections::BTreeMap;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Replays every seed of `target` through `check`; no panic, and how many reached where.
fn replay(target: &str, check: fn(&[u8]) -> checks::Reached) -> BTreeMap<checks::Reached, usize> {
    let mut reached = BTreeMap::new();
    for (name, data) in seeds(target) {
        let outcome = std::panic::catch_unwind(|| check(&data));
        let place = outcome.unwrap_or_else(|_| panic!("{name} panicked"));
        *reached.entry(place).or_default() += 1;
    }
    reached
}

#[test]
fn every_admission_review_seed_plans_without_panic_and_its_patch_applies() {
    use checks::Reached::*;
    let reached = replay("admission_review", checks::admission_review);
    // The seeds are real pod shapes: most are injected (their patches applied and re-planned),
    // some refused; none may fall out at decoding unnoticed.
    assert!(
        reached.get(&Injected).copied().unwrap_or(0) >= 10,
        "{reached:?}"
    );
    assert!(reached.contains_key(&Refused), "{reached:?}");
    assert!(reached.values().sum::<usize>() >= 10, "{reached:?}");
    // The seeds are reviews as the API server sends them: the webhook reads them on its fast
    // path, so the checks hold that path to serde_json's reading.
    let seeds = seeds("admission_review");
    let on_tree = seeds
        .iter()
        .filter(|(_, d)| checks::read_on_tree(d))
        .count();
    assert!(
        on_tree >= 10,
        "{on_tree} of {} seeds read on the fast path",
        seeds.len()
    );
}

#[test]
fn every_inject_yaml_seed_runs_without_panic() {
    use checks::Reached::*;
    let reached = replay("inject_yaml", checks::inject_yaml);
    assert!(
        reached.get(&Injected).copied().unwrap_or(0) >= 3,
        "{reached:?}"
    );
    assert!(reached.values().sum::<usize>() >= 5, "{reached:?}");
}
