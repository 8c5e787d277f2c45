//! Smoke tests: the local control plane is real and configured the way the operator needs it.

use mlflow_operator_test_support as common;

use std::time::Duration;

use common::node::pods_when;
use common::{cluster_env, eventually, with_temp_ns};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The API server is the version asked for: `K8S_VERSION` when set (a run on another version),
/// else the pin of `tests/cluster/versions.env`.
#[tokio::test]
async fn server_version_is_the_one_asked_for() {
    let client = common::client().await;
    let v = client.apiserver_version().await.unwrap();
    let asked = std::env::var("K8S_VERSION").unwrap_or_else(|_| common::pinned_k8s_version());
    assert_eq!(v.git_version, asked);
    let minor = asked.split('.').nth(1).unwrap();
    assert_eq!(v.minor, minor);
}

#[tokio::test]
async fn a_pod_runs_on_the_node_and_reaches_the_api_server_and_dns_through_services() {
    with_temp_ns("smoke-pod", |client, ns| async move {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        sas.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "trainer"}})).unwrap())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // The kubernetes Service by its ClusterIP (kube-proxy) and by name (cluster DNS). Busybox's
        // TLS cannot talk to the API server, so a TCP connection stands for reaching it (the
        // operator's pods speak TLS to it in tests/node_chart.rs).
        let script = "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT -e true \
            && echo 'kubernetes Service reached' && nslookup kubernetes.default.svc.cluster.local";
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "serviceAccountName": "trainer",
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": common::node::BUSYBOX, "imagePullPolicy": "Never",
                                "command": ["sh", "-c", script]}]
            }
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        // ServiceAccount admission ran: the kube-api-access projected volume is there.
        let vols = created.spec.as_ref().unwrap().volumes.clone().unwrap_or_default();
        assert!(vols.iter().any(|v| v.name.starts_with("kube-api-access-")), "volumes: {vols:?}");
        let phase = eventually("the pod to finish", Duration::from_secs(90), || async {
            let p = pods.get("p").await.ok()?;
            let phase = p.status?.phase?;
            (phase == "Succeeded" || phase == "Failed").then_some(phase)
        })
        .await;
        let log = pods.logs("p", &Default::default()).await.unwrap();
        assert_eq!(phase, "Succeeded", "log:\n{log}");
        let node = pods.get("p").await.unwrap().spec.unwrap().node_name;
        assert_eq!(node.as_deref(), Some(cluster_env("CLUSTER_NODE").as_str()));
        assert!(log.contains("kubernetes Service reached"), "{log}");
        assert!(log.contains("Address: 10.0.0.1"), "DNS answers the Service's ClusterIP: {log}");
    })
    .await;
}

#[tokio::test]
async fn deployment_yields_a_replicaset_and_pods() {
    with_temp_ns("smoke-deploy", |client, ns| async move {
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let spec = json!({"containers": [{"name": "c", "image": common::node::BUSYBOX,
            "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]});
        let d = common::deployment("train", 2, json!({}), spec);
        deploys.create(&PostParams::default(), &d).await.unwrap();
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let rs = eventually(
            "a ReplicaSet owned by the Deployment",
            Duration::from_secs(60),
            || async {
                let list = rss.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|rs| {
                    rs.owner_references()
                        .iter()
                        .any(|o| o.kind == "Deployment" && o.name == "train")
                })
            },
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let rs_name = rs.name_any();
        let owned = |p: &Pod| p.owner_references().iter().any(|o| o.name == rs_name);
        let what = "two Pods owned by the ReplicaSet";
        pods_when(&pods, "app=train", what, Duration::from_secs(60), |ps| {
            ps.iter().filter(|p| owned(p)).count() == 2
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn token_request_for_azure_audience_is_a_jwt_signed_by_the_apiserver() {
    with_temp_ns("smoke-token", |client, ns| async move {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        sas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "trainer"}})).unwrap(),
        )
        .await
        .unwrap();
        let req: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}
        }))
        .unwrap();
        let tr: TokenRequest = sas
            .create_subresource("token", "trainer", &PostParams::default(), &req)
            .await
            .unwrap();
        let token = tr.status.unwrap().token.expect("a token");

        let jwks_raw = client
            .request_text(
                http::Request::get("/openid/v1/jwks")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks_raw).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("the token's key is in the apiserver's JWKS");
        let issuer = cluster_env("CLUSTER_SA_ISSUER");
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["api://AzureADTokenExchange"]);
        validation.set_issuer(&[issuer.as_str()]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .expect("signature, audience, issuer and expiry verify")
        .claims;
        assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:trainer"));
        assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
        assert_eq!(claims["iss"], issuer);
    })
    .await;
}
