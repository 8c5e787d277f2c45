//! The operator's own Azure credential, chosen from its environment the way the Azure SDKs'
//! environment credential chooses: workload identity, else a client secret, else managed
//! identity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::arm::ResolveError;

/// The Azure environment variables the operator's own credential is chosen from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AzureEnv {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub client_secret: Option<String>,
    /// IDENTITY_ENDPOINT or MSI_ENDPOINT: a managed identity served elsewhere than IMDS (App
    /// Service, Azure Arc, Azure ML compute), which the IMDS probe must not judge.
    pub managed_identity_endpoint: Option<String>,
}

impl AzureEnv {
    /// Reads AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_CLIENT_SECRET
    /// through `var`; blank values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        Self {
            client_id: var("AZURE_CLIENT_ID"),
            tenant_id: var("AZURE_TENANT_ID"),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            client_secret: var("AZURE_CLIENT_SECRET"),
            managed_identity_endpoint: var("IDENTITY_ENDPOINT").or_else(|| var("MSI_ENDPOINT")),
        }
    }

    /// Whether the managed identity this environment selects is IMDS's, at its fixed address.
    pub fn uses_imds(&self) -> bool {
        self.credential_kind() == CredentialKind::ManagedIdentity
            && self.managed_identity_endpoint.is_none()
    }

    /// Which credential this environment selects.
    pub fn credential_kind(&self) -> CredentialKind {
        match (
            &self.client_id,
            &self.tenant_id,
            &self.federated_token_file,
            &self.client_secret,
        ) {
            (Some(_), Some(_), Some(_), _) => CredentialKind::WorkloadIdentity,
            (Some(_), Some(_), None, Some(_)) => CredentialKind::ClientSecret,
            _ => CredentialKind::ManagedIdentity,
        }
    }

    /// True when no Azure variable is set at all.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The operator's own Azure credential type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    WorkloadIdentity,
    ClientSecret,
    ManagedIdentity,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::WorkloadIdentity => "workload identity",
            CredentialKind::ClientSecret => "client secret",
            CredentialKind::ManagedIdentity => "managed identity",
        }
    }
}

pub(crate) const ENV_HINT: &str = "give the operator an Azure identity: AZURE_CLIENT_ID, \
     AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE (workload identity), or AZURE_CLIENT_ID, \
     AZURE_TENANT_ID and AZURE_CLIENT_SECRET (service principal), or run it where a managed \
     identity is available (AZURE_CLIENT_ID selects a user-assigned one)";

/// Where and how long to ask whether IMDS is there before asking it for a token: where nothing
/// answers at its address (a cluster outside Azure, a blocked link-local range), azure-identity
/// waits for its whole retry budget, about 40 s, before a binding could say the operator has no
/// credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsProbe {
    pub url: String,
    pub timeout: Duration,
}

impl Default for ImdsProbe {
    fn default() -> Self {
        Self {
            url: "http://169.254.169.254/metadata/identity/oauth2/token".to_string(),
            timeout: Duration::from_secs(3),
        }
    }
}

impl ImdsProbe {
    /// Ok when anything answers over HTTP at IMDS's address within the timeout (without the
    /// Metadata header real IMDS answers 400 at once), else why not.
    pub async fn answers(&self, http: &reqwest::Client) -> Result<(), String> {
        match http.get(&self.url).timeout(self.timeout).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => Err(format!(
                "nothing answered at the managed identity endpoint {} within {:?}",
                self.url, self.timeout
            )),
            Err(e) => Err(format!(
                "the managed identity endpoint {} cannot be reached: {e}",
                self.url
            )),
        }
    }
}

/// The credential `env` selects, talking through `client_options` (transport, authority host).
pub(crate) fn build(
    env: &AzureEnv,
    client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, ResolveError> {
    let kind = env.credential_kind();
    let built: azure_core::Result<Arc<dyn TokenCredential>> = match kind {
        CredentialKind::WorkloadIdentity => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: env.client_id.clone(),
                tenant_id: env.tenant_id.clone(),
                token_file_path: env.federated_token_file.clone(),
            }))
            .map(|c| c as Arc<dyn TokenCredential>)
        }
        CredentialKind::ClientSecret => ClientSecretCredential::new(
            env.tenant_id.as_deref().unwrap_or_default(),
            env.client_id.clone().unwrap_or_default(),
            Secret::new(env.client_secret.clone().unwrap_or_default()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map(|c| c as Arc<dyn TokenCredential>),
        CredentialKind::ManagedIdentity => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: env.client_id.clone().map(UserAssignedId::ClientId),
                client_options,
            }))
            .map(|c| c as Arc<dyn TokenCredential>)
        }
    };
    built.map_err(|e| {
        ResolveError::CredentialUnavailable(format!(
            "the operator's {} credential cannot be built: {e}; {ENV_HINT}",
            kind.as_str()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_choice() {
        let mut env = AzureEnv::default();
        assert!(env.is_empty());
        assert_eq!(env.credential_kind(), CredentialKind::ManagedIdentity);
        assert!(env.uses_imds());
        env.client_id = Some("c".into());
        assert_eq!(env.credential_kind(), CredentialKind::ManagedIdentity);
        assert!(env.uses_imds());
        let app_service = AzureEnv {
            managed_identity_endpoint: Some("http://localhost:8081/msi/token".into()),
            ..env.clone()
        };
        assert!(
            !app_service.uses_imds(),
            "App Service's endpoint is not IMDS"
        );
        env.tenant_id = Some("t".into());
        env.client_secret = Some("s".into());
        assert_eq!(env.credential_kind(), CredentialKind::ClientSecret);
        env.federated_token_file = Some("/tok".into());
        assert_eq!(env.credential_kind(), CredentialKind::WorkloadIdentity);
        assert!(!env.uses_imds());
    }

    #[test]
    fn environment_is_read_through_the_given_lookup() {
        let vars = [
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", " "),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        let env = AzureEnv::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        assert_eq!(
            env,
            AzureEnv {
                client_id: Some("c".into()),
                tenant_id: None,
                federated_token_file: Some("/var/run/token".into()),
                client_secret: None,
                managed_identity_endpoint: None,
            }
        );
        assert!(AzureEnv::from_vars(|_| None).is_empty());
    }
}
