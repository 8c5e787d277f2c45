//! Self-managed webhook certificates against the real API server: one CA shared by every
//! replica through a Secret, the caBundle kept equal to it, and the serving certificate re-issued
//! from the same CA before it expires.

use mlflow_operator_test_support as common;

use std::time::Duration;

use common::webhook::{register, webhook_configuration};
use common::with_temp_ns;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;
use mlflow_operator::certs::self_managed::{CaBundle, Config, ensure, sync_ca_bundle};

fn config(ns: &str) -> Config {
    let mut cfg = Config::new(
        ns,
        "webhook-cert",
        &format!("mlflow-operator-certs-{ns}"),
        "mlflow-operator-webhook",
        &[],
    );
    cfg.check_every = Duration::from_secs(1);
    cfg
}

#[tokio::test]
async fn the_secret_is_created_once_and_every_replica_serves_the_same_ca() {
    with_temp_ns("certs-shared", |client, ns| async move {
        let cfg = config(&ns);
        assert_eq!(
            cfg.names,
            [
                "mlflow-operator-webhook".to_string(),
                format!("mlflow-operator-webhook.{ns}"),
                format!("mlflow-operator-webhook.{ns}.svc"),
                format!("mlflow-operator-webhook.{ns}.svc.cluster.local"),
            ]
        );
        // Two replicas starting at once: one creates, the other reads what it wrote.
        let (a, b) = tokio::join!(ensure(&client, &cfg), ensure(&client, &cfg));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b, "both replicas serve the same CA and certificate");
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
            .get("webhook-cert")
            .await
            .unwrap();
        let data = secret.data.unwrap();
        for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
            assert!(data.contains_key(key), "{key} in the Secret");
        }
        assert_eq!(data["ca.crt"].0, a.ca_cert.as_bytes());
        // A later start reuses it.
        assert_eq!(ensure(&client, &cfg).await.unwrap(), a);
    })
    .await;
}

#[tokio::test]
async fn the_serving_certificate_is_reissued_from_the_same_ca_before_it_expires() {
    with_temp_ns("certs-rotate", |client, ns| async move {
        let mut cfg = config(&ns);
        let first = ensure(&client, &cfg).await.unwrap();
        // Pretend the certificate is near its end: less validity left than the renewal window.
        cfg.renew_days = cfg.leaf_days + 1;
        let second = ensure(&client, &cfg).await.unwrap();
        assert_eq!(
            second.ca_cert, first.ca_cert,
            "the CA (and so every caBundle) stays"
        );
        assert_ne!(second.cert, first.cert, "a new serving certificate");
        assert!(second.not_after >= first.not_after);
        let stored = Api::<Secret>::namespaced(client.clone(), &ns)
            .get("webhook-cert")
            .await
            .unwrap();
        assert_eq!(stored.data.unwrap()["tls.crt"].0, second.cert.as_bytes());
    })
    .await;
}

#[tokio::test]
async fn the_ca_bundle_is_set_on_every_webhook_and_left_alone_when_current() {
    with_temp_ns("certs-bundle", |client, ns| async move {
        let cfg = config(&ns);
        let mut mwc =
            webhook_configuration(&cfg.webhook_config, "https://127.0.0.1:1/mutate", None, &ns)
                .await;
        let mut second = mwc["webhooks"][0].clone();
        second["name"] = serde_json::json!("second.mlflow-operator.io");
        mwc["webhooks"].as_array_mut().unwrap().push(second);
        register(&client, &mwc).await;

        let pems = ensure(&client, &cfg).await.unwrap();
        assert_eq!(
            sync_ca_bundle(&client, &cfg.webhook_config, &pems.ca_cert)
                .await
                .unwrap(),
            CaBundle::Updated
        );
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let got = api.get(&cfg.webhook_config).await.unwrap();
        for w in got.webhooks.unwrap() {
            assert_eq!(
                w.client_config.ca_bundle.unwrap().0,
                pems.ca_cert.as_bytes(),
                "{}",
                w.name
            );
        }
        assert_eq!(
            sync_ca_bundle(&client, &cfg.webhook_config, &pems.ca_cert)
                .await
                .unwrap(),
            CaBundle::Current,
            "no write when current"
        );
        // A configuration that does not exist (yet) is not an error.
        assert_eq!(
            sync_ca_bundle(&client, "does-not-exist", &pems.ca_cert)
                .await
                .unwrap(),
            CaBundle::NoConfiguration
        );
        let _ = api
            .delete(&cfg.webhook_config, &DeleteParams::default())
            .await;
    })
    .await;
}
