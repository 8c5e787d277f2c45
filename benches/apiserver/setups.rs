//! The three setups and the switch between them: which MutatingWebhookConfiguration is
//! registered, and the wait until the API server acts on the change.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::common::node::{BUSYBOX, TRACK};
use crate::common::{eventually, eventually_ok};
use crate::histogram::Histogram;
use crate::{MINUTE, RELEASE, floor_pods};

pub const OUR_WEBHOOK: &str = "pods.mlflow-operator.io";
const METRIC: &str = "apiserver_admission_webhook_admission_duration_seconds";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Setup {
    Bare,
    Floor,
    Ours,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::Ours, Setup::Floor, Setup::Bare];

    /// Round `i`'s order, rotated so that no setup always runs on the emptiest etcd.
    pub fn rotated(i: usize) -> [Setup; 3] {
        let mut order = Self::ALL;
        order.rotate_left(i % 3);
        order
    }

    pub fn name(self) -> &'static str {
        match self {
            Setup::Bare => "no webhook",
            Setup::Floor => "floor",
            Setup::Ours => "ours",
        }
    }

    /// The webhook's name, as the API server's metrics label it.
    pub fn webhook(self) -> Option<&'static str> {
        match self {
            Setup::Bare => None,
            Setup::Floor => Some(floor_pods::WEBHOOK),
            Setup::Ours => Some(OUR_WEBHOOK),
        }
    }
}

/// The registrations of both webhooks, ready to be created again.
pub struct Setups {
    client: Client,
    team: String,
    pub ours: Value,
    pub floor: Value,
}

impl Setups {
    pub async fn new(client: &Client, team: &str) -> Self {
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let chart = mwcs.get(RELEASE).await.expect("the chart's webhook");
        let mut ours = serde_json::to_value(chart).unwrap();
        let meta = ours["metadata"].as_object_mut().unwrap();
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(field);
        }
        Self {
            client: client.clone(),
            team: team.to_string(),
            ours,
            floor: Value::Null,
        }
    }

    fn registration(&self, setup: Setup) -> Option<&Value> {
        match setup {
            Setup::Bare => None,
            Setup::Floor => Some(&self.floor).filter(|v| !v.is_null()),
            Setup::Ours => Some(&self.ours),
        }
    }

    /// Registers `setup`'s webhook alone and waits until the API server calls it (its
    /// admission count moves on a dry-run create that comes back injected), or, with no webhook,
    /// until a dry-run create comes back not injected.
    pub async fn switch(&self, setup: Setup) {
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        for other in Setup::ALL.into_iter().filter(|s| *s != setup) {
            let Some(name) = self.registration(other).map(name_of) else {
                continue;
            };
            if mwcs.get_opt(name).await.unwrap().is_some() {
                mwcs.delete(name, &DeleteParams::default()).await.unwrap();
            }
        }
        let before = scrape(&self.client).await;
        if let Some(reg) = self.registration(setup)
            && mwcs.get_opt(name_of(reg)).await.unwrap().is_none()
        {
            let mwc: MutatingWebhookConfiguration = serde_json::from_value(reg.clone()).unwrap();
            mwcs.create(&PostParams::default(), &mwc).await.unwrap();
        }
        let what = format!("the API server to admit through: {}", setup.name());
        eventually(&what, 2 * MINUTE, || async {
            let p = self.dry_run().await?;
            let acted = match setup.webhook() {
                None => !injected(&p),
                Some(_) => {
                    injected(&p) && scrape(&self.client).await.count(setup) > before.count(setup)
                }
            };
            acted.then_some(())
        })
        .await;
    }

    async fn dry_run(&self) -> Option<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.team);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        pods.create(&dry, &pod()).await.ok()
    }

    /// The JSON patch (base64) that turns the pod as created without a webhook into the pod ours
    /// makes, and that pod.
    pub async fn our_patch(&self) -> (String, Value) {
        self.switch(Setup::Ours).await;
        let made = normalized(self.dry_run().await.expect("a dry-run create"));
        self.switch(Setup::Bare).await;
        let bare = normalized(self.dry_run().await.expect("a dry-run create"));
        let patch = serde_json::to_vec(&json_patch::diff(&bare, &made)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(patch);
        (b64, made)
    }

    pub async fn check_floor_makes(&self, made_by_ours: &Value) {
        self.switch(Setup::Floor).await;
        let made = normalized(self.dry_run().await.expect("a dry-run create"));
        assert_eq!(
            &made, made_by_ours,
            "the floor's answer makes the pod ours makes"
        );
    }
}

fn name_of(registration: &Value) -> &str {
    registration["metadata"]["name"].as_str().unwrap()
}

/// The pod without what differs between any two creates: name, uid, times, versions, status,
/// and the ServiceAccount token volume's generated name (given one placeholder name).
fn normalized(pod: Pod) -> Value {
    let mut v = serde_json::to_value(pod).unwrap();
    let meta = v["metadata"].as_object_mut().unwrap();
    for field in [
        "name",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        meta.remove(field);
    }
    v.as_object_mut().unwrap().remove("status");
    let spec = &mut v["spec"];
    let named = |list: &mut Value| {
        for item in list.as_array_mut().into_iter().flatten() {
            let generated = item["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"));
            if generated {
                item["name"] = json!("kube-api-access");
            }
        }
    };
    named(&mut spec["volumes"]);
    for c in spec["containers"].as_array_mut().unwrap() {
        named(&mut c["volumeMounts"]);
    }
    v
}

/// The label of the pods made to be deleted under a load (`--during-deletion`).
pub const OLD: &str = "apiserver-bench/old";

/// A labelled pod held from scheduling, so it costs the node nothing.
pub fn pod() -> Pod {
    labelled_pod(json!({TRACK: "true"}))
}

/// [`pod`], also labelled [`OLD`]: opted in as well, so the leader's pod watch sees it go.
pub fn old_pod() -> Pod {
    labelled_pod(json!({TRACK: "true", OLD: "true"}))
}

fn labelled_pod(labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "load-", "labels": labels},
        "spec": {
            "schedulingGates": [{"name": "mlflow-operator.io/never-scheduled"}],
            "containers": [{"name": "c", "image": BUSYBOX}]
        }
    }))
    .unwrap()
}

pub fn injected(p: &Pod) -> bool {
    let containers = p.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.env.iter().flatten())
        .any(|e| e.name == "MLFLOW_TRACKING_URI")
}

/// Both webhooks' admission-duration histograms, from the API server's /metrics.
pub struct Scrape {
    floor: Histogram,
    ours: Histogram,
}

impl Scrape {
    pub fn of(&self, setup: Setup) -> Option<&Histogram> {
        match setup {
            Setup::Bare => None,
            Setup::Floor => Some(&self.floor),
            Setup::Ours => Some(&self.ours),
        }
    }

    fn count(&self, setup: Setup) -> f64 {
        self.of(setup).map_or(0.0, Histogram::count)
    }

    /// What `setup`'s webhook was seen doing between `start` and this scrape.
    pub fn since(&self, start: &Scrape, setup: Setup) -> Option<Histogram> {
        Some(self.of(setup)?.since(start.of(setup)?))
    }
}

/// Deletes the team namespace's pods and waits until none is left, so that every load starts
/// from the same empty namespace. Pods kept off the node go at once, without a grace period.
/// A collection delete of thousands of pods can outlast the API server's request timeout while
/// the deletion goes on, so it is sent again until the list comes back empty.
pub async fn clear(client: &Client, team: &str) {
    clear_selected(client, team, None).await
}

/// [`clear`] of the pods `selector` selects (all: None).
pub async fn clear_selected(client: &Client, team: &str, selector: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let selected = |params: ListParams| match selector {
        Some(s) => params.labels(s),
        None => params,
    };
    let one = selected(ListParams::default().limit(1));
    eventually_ok("the namespace's pods deleted", 10 * MINUTE, || async {
        let left = pods.list_metadata(&one).await.map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            return Ok(());
        }
        let all = selected(ListParams::default());
        match pods.delete_collection(&DeleteParams::default(), &all).await {
            Ok(_) => Err("pods left after a collection delete".to_string()),
            Err(e) => Err(format!("collection delete: {e}")),
        }
    })
    .await
}

pub async fn scrape(client: &Client) -> Scrape {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(req)
        .await
        .expect("the API server's /metrics");
    let of = |name: &str| Histogram::parse(&text, METRIC, &[&format!("name=\"{name}\"")]);
    Scrape {
        floor: of(floor_pods::WEBHOOK),
        ours: of(OUR_WEBHOOK),
    }
}
