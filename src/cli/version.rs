//! `mlflow-operator version`: the version, the git commit and the build date (build.rs).

use serde::Serialize;

use super::Output;

/// What this binary was built from.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    /// The full commit hash, or "unknown" when built outside git without one given.
    pub commit: &'static str,
    /// The commit's date (RFC 3339), or "unknown".
    pub build_date: &'static str,
}

pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("MLFLOW_OPERATOR_BUILD_COMMIT"),
    build_date: env!("MLFLOW_OPERATOR_BUILD_DATE"),
};

/// The text `version` prints in `output`.
pub fn render(build: &BuildInfo, output: Output) -> String {
    match output {
        Output::Text => format!(
            "mlflow-operator {}\ncommit: {}\nbuild date: {}\n",
            build.version, build.commit, build.build_date
        ),
        Output::Json => {
            let json = serde_json::to_string(build).expect("strings always serialize");
            format!("{json}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let build = BuildInfo {
            version: "1.2.3",
            commit: "abc",
            build_date: "2026-01-02T03:04:05Z",
        };
        assert_eq!(
            render(&build, Output::Text),
            "mlflow-operator 1.2.3\ncommit: abc\nbuild date: 2026-01-02T03:04:05Z\n"
        );
        assert_eq!(
            render(&build, Output::Json),
            "{\"version\":\"1.2.3\",\"commit\":\"abc\",\"buildDate\":\"2026-01-02T03:04:05Z\"}\n"
        );
    }
}
