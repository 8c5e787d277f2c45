use k8s_openapi::api::admissionregistration::v1::ServiceReference;

use super::*;

#[test]
fn a_probe_review_is_allowed_with_its_uid_and_marks_the_lease() {
    use base64::Engine;
    let cases: [(&[u8], &str); 3] = [
        (br#"{"request": {"uid": "7f1c"}}"#, "7f1c"),
        (br#"{"request": {}}"#, ""),
        (b"not json", ""),
    ];
    for (body, uid) in cases {
        let v: Value = serde_json::from_slice(&answer(body)).unwrap();
        let r = &v["response"];
        assert_eq!(
            (&r["uid"], &r["allowed"]),
            (&json!(uid), &json!(true)),
            "{v}"
        );
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(r["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut lease = serde_json::to_value(Lease::default()).unwrap();
        json_patch::patch(&mut lease, &patch).unwrap();
        let lease: Lease = serde_json::from_value(lease).unwrap();
        assert!(was_called(&lease), "{lease:?}");
    }
}

/// A dry-run that the API server admitted without calling the canary is no evidence.
#[test]
fn only_a_lease_the_canary_marked_counts() {
    let lease = |annotations: Value| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "p", "annotations": annotations}}))
            .unwrap()
    };
    for (annotations, called) in [
        (json!(null), false),
        (json!({}), false),
        (json!({LABEL: "other"}), false),
        (json!({"other": CALLED}), false),
        (json!({LABEL: CALLED}), true),
    ] {
        assert_eq!(
            was_called(&lease(annotations.clone())),
            called,
            "{annotations}"
        );
    }
}

fn service(port: Option<i32>) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: "mlflow-operator-webhook".into(),
            namespace: "mlflow-operator".into(),
            path: Some("/mutate".into()),
            port,
        }),
        ca_bundle: Some(k8s_openapi::ByteString(b"old and new".to_vec())),
        ..Default::default()
    }
}

fn url(u: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        url: Some(u.into()),
        ..Default::default()
    }
}

#[test]
fn the_canary_reaches_the_webhooks_own_service_or_url_on_the_probe_port() {
    let cases = [
        (
            service(Some(443)),
            Some(
                json!({"service": {"name": "mlflow-operator-webhook", "namespace": "mlflow-operator", "path": "/ca-probe", "port": 9444}}),
            ),
        ),
        (
            service(None),
            Some(
                json!({"service": {"name": "mlflow-operator-webhook", "namespace": "mlflow-operator", "path": "/ca-probe", "port": 9444}}),
            ),
        ),
        (
            url("https://127.0.0.1:8443/mutate?x=1"),
            Some(json!({"url": "https://127.0.0.1:9444/ca-probe"})),
        ),
        (
            url("https://webhook.example.com/mutate"),
            Some(json!({"url": "https://webhook.example.com:9444/ca-probe"})),
        ),
        (url("not a url"), None),
        (WebhookClientConfig::default(), None),
    ];
    for (main, want) in cases {
        let got = canary_client(&main, 9444, "NEW CA").map(|c| {
            assert_eq!(
                c.ca_bundle.as_ref().unwrap().0,
                b"NEW CA",
                "the new CA alone"
            );
            let mut v = serde_json::to_value(c).unwrap();
            v.as_object_mut().unwrap().remove("caBundle");
            v
        });
        assert_eq!(got, want, "{main:?}");
    }
}

#[test]
fn the_canary_is_called_for_this_replicas_probe_lease_only() {
    let c = serde_json::to_value(canary("ab12", url("https://x:1/ca-probe"), "ops")).unwrap();
    assert_eq!(c["name"], "ab12.ca-probe.mlflow-operator.io");
    assert_eq!(c["objectSelector"], json!({"matchLabels": {LABEL: "ab12"}}));
    assert_eq!(
        c["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": "ops"}})
    );
    assert_eq!(c["rules"][0]["resources"], json!(["leases"]));
    assert_eq!(c["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(
        (c["sideEffects"].as_str(), c["failurePolicy"].as_str()),
        (Some("None"), Some("Fail"))
    );
}

#[test]
fn a_replicas_tag_is_short_stable_and_fit_for_a_label_value() {
    let a = tag("mlflow-operator-7d9c6b5f4-x2k8q");
    assert_eq!(a, tag("mlflow-operator-7d9c6b5f4-x2k8q"));
    assert_ne!(a, tag("mlflow-operator-7d9c6b5f4-p9z1m"));
    assert_eq!(a.len(), 10);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}
