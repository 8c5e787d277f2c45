//! The fuzz targets' checks (`fuzz/checks.rs`) over the committed seed corpus, on stable Rust:
//! the targets keep compiling against the library and every seed keeps passing. The fuzzing
//! itself runs with `cargo +nightly fuzz run <target>` (see fuzz/README.md).

#[path = "../fuzz/checks.rs"]
mod checks;

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

#[test]
fn every_admission_review_seed_plans_without_panic_and_its_patch_applies() {
    let seeds = seeds("admission_review");
    assert!(seeds.len() >= 10, "{} seeds", seeds.len());
    for (name, data) in seeds {
        let outcome = std::panic::catch_unwind(|| checks::admission_review(&data));
        assert!(outcome.is_ok(), "{name}");
    }
}

#[test]
fn every_inject_yaml_seed_runs_without_panic() {
    let seeds = seeds("inject_yaml");
    assert!(seeds.len() >= 5, "{} seeds", seeds.len());
    for (name, data) in seeds {
        let outcome = std::panic::catch_unwind(|| checks::inject_yaml(&data));
        assert!(outcome.is_ok(), "{name}");
    }
}
