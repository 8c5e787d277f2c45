use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;

fn with_revision(
    mut crd: CustomResourceDefinition,
    revision: Option<&str>,
) -> CustomResourceDefinition {
    let annotations = crd.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match revision {
        Some(r) => annotations.insert(REVISION_ANNOTATION.into(), r.into()),
        None => annotations.remove(REVISION_ANNOTATION),
    };
    crd
}

/// Ours with the spec's property `field` removed from every version.
fn without_spec_field(field: &str) -> CustomResourceDefinition {
    let mut v = serde_json::to_value(definition()).unwrap();
    for version in v["spec"]["versions"].as_array_mut().unwrap() {
        let props = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert!(
            props.as_object_mut().unwrap().remove(field).is_some(),
            "no spec.{field}"
        );
    }
    serde_json::from_value(v).unwrap()
}

fn revision_0() -> CustomResourceDefinition {
    serde_yaml_ng::from_str(include_str!("../../tests/fixtures/crd-revision-0.yaml")).unwrap()
}

#[test]
fn judges_the_clusters_crd() {
    let later = with_revision(definition(), Some(&(REVISION + 1).to_string()));
    let cases: Vec<(&str, Option<CustomResourceDefinition>, Verdict)> = vec![
        ("absent", None, Verdict::Absent),
        ("this release's", Some(definition()), Verdict::Current),
        (
            "a later revision with every field",
            Some(later.clone()),
            Verdict::Current,
        ),
        (
            "an earlier revision with every field (validation changed only)",
            Some(with_revision(definition(), None)),
            Verdict::Behind {
                revision: 0,
                missing: vec![],
            },
        ),
        (
            "an unreadable revision counts as 0",
            Some(with_revision(definition(), Some("two"))),
            Verdict::Behind {
                revision: 0,
                missing: vec![],
            },
        ),
        (
            "this revision edited by hand",
            Some(without_spec_field("env")),
            Verdict::Differs {
                revision: REVISION,
                missing: vec!["v1alpha1: spec.env".into()],
            },
        ),
    ];
    for (what, live, want) in cases {
        assert_eq!(judge(live.as_ref()), want, "{what}");
    }
}

#[test]
fn the_crd_before_any_revision_lacks_the_pod_status_and_the_run_tags() {
    let verdict = judge(Some(&revision_0()));
    let Verdict::Behind {
        revision: 0,
        missing,
    } = &verdict
    else {
        panic!("{verdict:?}");
    };
    for field in ["v1alpha1: status.pods", "v1alpha1: spec.runTags"] {
        assert!(
            missing.iter().any(|m| m == field),
            "{field} not in {missing:?}"
        );
    }
    let problem = verdict.problem().unwrap();
    assert!(
        problem.contains("revision 0; this release's is"),
        "{problem}"
    );
    assert!(problem.contains("status.pods"), "{problem}");
}

#[test]
fn only_an_absent_or_earlier_crd_that_would_prune_is_a_problem() {
    let empty = Verdict::Behind {
        revision: 0,
        missing: vec![],
    };
    let cases = [
        (Verdict::Current, false),
        (empty.clone(), false),
        (
            Verdict::Behind {
                revision: 0,
                missing: vec!["v1alpha1: spec.x".into()],
            },
            true,
        ),
        (
            Verdict::Differs {
                revision: 1,
                missing: vec!["v1alpha1: spec.x".into()],
            },
            false,
        ),
        (Verdict::Absent, true),
    ];
    for (verdict, problem) in cases {
        assert_eq!(verdict.problem().is_some(), problem, "{verdict:?}");
    }
    let differs = Verdict::Differs {
        revision: 2,
        missing: vec!["v1alpha1: spec.x".into()],
    };
    assert!(differs.warning().unwrap().contains("spec.x"));
    assert_eq!(Verdict::Current.warning(), None);
    assert!(empty.upgrade_due());
    assert!(
        !Verdict::Differs {
            revision: 1,
            missing: vec![]
        }
        .upgrade_due()
    );
}

#[test]
fn finds_missing_fields_through_arrays_and_maps_and_stops_at_unknown_fields() {
    let ours = json!({"properties": {
        "a": {"type": "array", "items": {"properties": {"x": {}, "y": {}}}},
        "m": {"type": "object", "additionalProperties": {"properties": {"k": {}}}},
        "free": {"properties": {"deep": {}}},
    }});
    let theirs = json!({"properties": {
        "a": {"type": "array", "items": {"properties": {"x": {}}}},
        "m": {"type": "object", "additionalProperties": {"properties": {}}},
        "free": {"x-kubernetes-preserve-unknown-fields": true},
    }});
    let mut out = Vec::new();
    absent_paths(&ours, &theirs, "", &mut out);
    assert_eq!(out, vec!["a[].y", "m{}.k"]);
}

#[test]
fn a_version_the_cluster_does_not_serve_is_missing() {
    let mut live = definition();
    live.spec.versions[0].name = "v0".into();
    assert_eq!(
        missing_fields(&definition(), &live),
        vec!["version v1alpha1"]
    );
}

#[test]
fn the_definition_names_itself_and_carries_its_revision() {
    let crd = definition();
    assert_eq!(crd.metadata.name.as_deref(), Some(name().as_str()));
    assert_eq!(revision(&crd), REVISION);
}

/// A change of the CRD must raise [`REVISION`]: otherwise operators of this release would not
/// upgrade a cluster's CRD of the previous one.
#[test]
fn the_revision_is_raised_with_every_change_of_the_crd() {
    let spec = serde_json::to_vec(&MlflowWorkspaceBinding::crd().spec).unwrap();
    let digest = format!("{:x}", Sha256::digest(&spec));
    let pinned = [(
        1,
        "da6f6e96e936dec8899e305aad291ef5b487250da825e60ffc95ea430991e4b1",
    )];
    let (revision, pinned_digest) = pinned[pinned.len() - 1];
    assert_eq!(
        (REVISION, digest.as_str()),
        (revision, pinned_digest),
        "the CRD changed: raise crd::REVISION and add ({}, \"{digest}\") to `pinned`",
        REVISION + 1
    );
}
