//! The git commit and build date `mlflow-operator version` prints.
//!
//! The date is the commit's (or SOURCE_DATE_EPOCH), never the clock's, so two builds of one
//! commit are the same binary. Image builds have no .git: they pass the commit in
//! MLFLOW_OPERATOR_COMMIT (the Dockerfile's GIT_COMMIT).

use std::path::PathBuf;
use std::process::Command;

const COMMIT_VAR: &str = "MLFLOW_OPERATOR_COMMIT";
const EPOCH_VAR: &str = "SOURCE_DATE_EPOCH";
const UNKNOWN: &str = "unknown";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={COMMIT_VAR}");
    println!("cargo:rerun-if-env-changed={EPOCH_VAR}");
    let given = std::env::var(COMMIT_VAR).ok().map(|c| c.trim().to_string());
    // One printable word: a line break in it would be read as another cargo: instruction.
    let given = given.filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic()));
    let commit = match given {
        Some(commit) => Some(commit),
        None => git(&["rev-parse", "HEAD"]).inspect(|_| watch_head()),
    };
    let date = epoch_date().or_else(|| git(&["log", "-1", "--format=%cI", commit.as_deref()?]));
    let commit = commit.unwrap_or_else(|| UNKNOWN.into());
    let date = date.unwrap_or_else(|| UNKNOWN.into());
    println!("cargo:rustc-env=MLFLOW_OPERATOR_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=MLFLOW_OPERATOR_BUILD_DATE={date}");
}

/// A git command's trimmed output, None when git is missing, fails, or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Reruns this script when HEAD moves: a checkout changes HEAD, a commit changes the branch's
/// ref (a loose file, or packed-refs once git packs it). Only existing files: cargo reruns a
/// script on every build while a watched path is missing.
fn watch_head() {
    let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
    paths.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in paths {
        let Some(file) = git(&["rev-parse", "--git-path", &path]) else {
            continue;
        };
        if PathBuf::from(&file).is_file() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}

/// SOURCE_DATE_EPOCH (seconds) as an RFC 3339 UTC time.
fn epoch_date() -> Option<String> {
    let seconds: i64 = std::env::var(EPOCH_VAR).ok()?.trim().parse().ok()?;
    Some(jiff::Timestamp::from_second(seconds).ok()?.to_string())
}
