//! What the cluster's API server keeps of a binding's spec, told from its version. A field it
//! would drop from every injected pod makes the binding not Ready with the fix: otherwise each
//! pod is refused with the API server's own message, which names neither the binding nor the
//! field.

use k8s_openapi::apimachinery::pkg::version::Info;
use kube::Client;

use crate::binding::MlflowWorkspaceBindingSpec;

/// The first minor version whose API server keeps `env[].valueFrom.fileKeyRef` by default: the
/// EnvFiles feature is alpha (off) in 1.34 and on from 1.35.
const ENV_FILES_SINCE: u32 = 35;

/// The API server the operator talks to, as far as the controller's rules need it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiServer {
    /// `(major, minor)`; None when the version could not be read (every field is then allowed).
    version: Option<(u32, u32)>,
    git_version: String,
}

impl ApiServer {
    /// From `/version`. Managed clusters spell the minor version `34+`; the suffix is ignored.
    pub fn from_info(info: &Info) -> Self {
        let number = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
        Self {
            version: number(&info.major).zip(number(&info.minor)),
            git_version: info.git_version.clone(),
        }
    }

    /// Reads `/version`; on failure, says so and allows every field rather than refuse bindings.
    pub async fn read(client: &Client) -> Self {
        match client.apiserver_version().await {
            Ok(info) => Self::from_info(&info),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the API server's version: no field of a binding is checked against it");
                Self::default()
            }
        }
    }

    /// Why pods of a binding with this spec would not get what it says, on this API server.
    pub fn refuses(&self, spec: &MlflowWorkspaceBindingSpec) -> Option<String> {
        let (major, minor) = self.version?;
        if (major, minor) >= (1, ENV_FILES_SINCE) {
            return None;
        }
        let (i, var) = spec.env.iter().enumerate().find(|(_, v)| {
            v.value_from
                .as_ref()
                .is_some_and(|f| f.file_key_ref.is_some())
        })?;
        Some(format!(
            "spec.env[{i}] ({}) uses valueFrom.fileKeyRef, which this cluster's API server (Kubernetes {}) drops from pods: it needs the EnvFiles feature, on by default from Kubernetes v1.{ENV_FILES_SINCE}. Use valueFrom.secretKeyRef or valueFrom.configMapKeyRef instead, or upgrade the cluster",
            var.name, self.git_version
        ))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, FileKeySelector, SecretKeySelector};

    use super::*;

    fn server(major: &str, minor: &str) -> ApiServer {
        ApiServer::from_info(&Info {
            major: major.into(),
            minor: minor.into(),
            git_version: format!("v{major}.{}.4", minor.trim_end_matches('+')),
            ..Default::default()
        })
    }

    fn spec(env: Vec<EnvVar>) -> MlflowWorkspaceBindingSpec {
        MlflowWorkspaceBindingSpec {
            tracking_uri: Some("http://mlflow".into()),
            env,
            ..Default::default()
        }
    }

    fn from_file(name: &str) -> EnvVar {
        let file = FileKeySelector {
            volume_name: "config".into(),
            path: "env".into(),
            key: "TOKEN".into(),
            ..Default::default()
        };
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                file_key_ref: Some(file),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn plain(name: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some("1".into()),
            ..Default::default()
        }
    }

    fn from_secret(name: &str) -> EnvVar {
        let secret = SecretKeySelector {
            name: "s".into(),
            key: "k".into(),
            ..Default::default()
        };
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(secret),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn file_key_env_is_refused_only_where_the_api_server_drops_it() {
        let with_file = spec(vec![plain("A"), from_file("TOKEN")]);
        let without = spec(vec![plain("A"), from_secret("B")]);
        let unknown = ApiServer::default();
        let cases = [
            (server("1", "34"), &with_file, true),
            (server("1", "34+"), &with_file, true),
            (server("1", "33"), &with_file, true),
            (server("1", "35"), &with_file, false),
            (server("1", "37"), &with_file, false),
            (server("1", "34"), &without, false),
            (unknown, &with_file, false),
        ];
        for (server, spec, refused) in cases {
            assert_eq!(server.refuses(spec).is_some(), refused, "{server:?}");
        }
    }

    #[test]
    fn the_refusal_names_the_variable_the_version_and_the_fix() {
        let why = server("1", "34")
            .refuses(&spec(vec![plain("A"), from_file("TOKEN")]))
            .unwrap();
        for part in [
            "spec.env[1] (TOKEN)",
            "fileKeyRef",
            "Kubernetes v1.34.4",
            "v1.35",
            "secretKeyRef",
        ] {
            assert!(why.contains(part), "{part} missing from: {why}");
        }
    }
}
