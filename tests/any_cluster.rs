//! The README's "On your own cluster" commands, run exactly as written against the local cluster
//! through its kubeconfig only, as if it were someone else's: nothing but `KUBECONFIG`, `PATH`
//! (kubectl, helm and this build's `mlflow-operator`) and an empty `HOME` reach them. The image
//! step before them is the project's own daemonless build, which `hack/test` has already loaded
//! into the node under the README's name.

use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "<!-- any-cluster:";

/// The first ```sh block after the marker in the README.
fn readme_commands() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let after = &readme[readme
        .find(MARKER)
        .expect("the README marks its any-cluster block")..];
    let start = after
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + "```sh\n".len();
    let len = after[start..].find("```").expect("the block ends");
    after[start..start + len].to_string()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with this build's `mlflow-operator` first, and `MLFLOW_OPERATOR_HELM` as `helm` when set.
fn path(extra: &Path) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_mlflow-operator"));
    if let Ok(helm) = std::env::var("MLFLOW_OPERATOR_HELM") {
        std::os::unix::fs::symlink(helm, extra.join("helm")).unwrap();
    }
    let dirs = [extra, bin.parent().unwrap()].map(|d| d.display().to_string());
    format!(
        "{}:{}",
        dirs.join(":"),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// What a failed run leaves is removed, as the README's last commands would have.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |cmd: &str| {
            let _ = Command::new("sh").arg("-c").arg(cmd).output();
        };
        run("kubectl delete -f examples/quickstart.yaml --ignore-not-found --wait=false");
        let helm = mlflow_operator_test_support::helm::program();
        run(&format!(
            "{helm} uninstall mlflow-operator -n mlflow-operator --wait"
        ));
        run("kubectl delete namespace mlflow-operator team-a --ignore-not-found --wait");
    }
}

#[test]
fn the_readme_commands_install_inject_check_and_remove_on_a_cluster_known_by_its_kubeconfig() {
    let commands = readme_commands();
    let kubeconfig =
        std::env::var("KUBECONFIG").expect("KUBECONFIG names the cluster (hack/test sets it)");
    let home = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup;
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &commands])
        .current_dir(root())
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path(home.path()))
        .env("HOME", home.path())
        .output()
        .expect("bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the README's commands failed:\n{commands}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for line in [
        "MLFLOW_EXPERIMENT_NAME=quickstart",
        "MLFLOW_TRACKING_URI=http://mlflow.mlflow.svc.cluster.local:5000",
        "Status check results are √",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}
