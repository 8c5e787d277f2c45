//! What every cluster benchmark does around its measurement: a multi-threaded runtime, and its
//! namespaces removed at the end.

use std::future::Future;

/// Runs `f` to completion on a multi-threaded runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Deletes the namespaces labelled `label=run` (and so what is in them) when dropped, also on
/// panic, without waiting for them to go.
pub struct LabelledNamespaces {
    pub label: &'static str,
    pub run: String,
}

impl Drop for LabelledNamespaces {
    fn drop(&mut self) {
        let selector = format!("{}={}", self.label, self.run);
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "namespace", "-l", &selector, "--wait=false"])
            .output();
    }
}
