//! What the operator creates at run time (its certificate Secret, its leader-election Lease) is
//! owned by the operator's own ServiceAccount, which the chart creates: when the release is
//! uninstalled, Kubernetes' garbage collector removes those objects with the ServiceAccount.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};

/// The owner reference to ServiceAccount `name` in `namespace` (one GET, for its uid).
pub async fn service_account(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, kube::Error> {
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    Ok(owner_of(&sa))
}

/// A non-controlling owner reference to `sa`.
pub fn owner_of(sa: &ServiceAccount) -> OwnerReference {
    OwnerReference {
        api_version: ServiceAccount::api_version(&()).into_owned(),
        kind: ServiceAccount::kind(&()).into_owned(),
        name: sa.metadata.name.clone().unwrap_or_default(),
        uid: sa.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Whether `refs` already hold `owner` (by uid).
pub fn is_owned_by(refs: Option<&[OwnerReference]>, owner: &OwnerReference) -> bool {
    refs.unwrap_or_default().iter().any(|r| r.uid == owner.uid)
}

/// Makes sure Lease `name` exists and is owned by `owner`, before the lease manager uses it:
/// created empty if missing, else given the owner reference if it lacks it.
pub async fn own_lease(
    client: &Client,
    namespace: &str,
    name: &str,
    owner: &OwnerReference,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_string());
    lease.metadata.owner_references = Some(vec![owner.clone()]);
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let existing = leases.get(name).await?;
    if is_owned_by(existing.metadata.owner_references.as_deref(), owner) {
        return Ok(());
    }
    let mut refs = existing.metadata.owner_references.unwrap_or_default();
    refs.push(owner.clone());
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(name: &str, uid: &str) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.into());
        sa.metadata.uid = Some(uid.into());
        sa
    }

    #[test]
    fn owner_reference_names_the_service_account_and_does_not_block_or_control() {
        let r = owner_of(&sa("mlflow-operator", "u-1"));
        assert_eq!(
            (
                r.api_version.as_str(),
                r.kind.as_str(),
                r.name.as_str(),
                r.uid.as_str()
            ),
            ("v1", "ServiceAccount", "mlflow-operator", "u-1")
        );
        assert_eq!((r.controller, r.block_owner_deletion), (None, None));
    }

    #[test]
    fn ownership_is_recognised_by_uid() {
        let owner = owner_of(&sa("op", "u-1"));
        let other = owner_of(&sa("op", "u-2"));
        let cases: [(Option<Vec<OwnerReference>>, bool); 4] = [
            (None, false),
            (Some(vec![]), false),
            (Some(vec![other.clone()]), false),
            (Some(vec![other, owner.clone()]), true),
        ];
        for (refs, want) in cases {
            assert_eq!(is_owned_by(refs.as_deref(), &owner), want, "{refs:?}");
        }
    }
}
