use super::*;

fn reference(name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("MlflowWorkspaceBinding".into()),
        namespace: Some("team".into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    }
}

#[test]
fn the_same_event_is_everything_but_its_note() {
    use EventType::{Normal, Warning};
    let base = Key::of(
        &event(Normal, "Resolved", "Resolve", "uri a"),
        &reference("b", "u1"),
    );
    // (what, type, reason, action, note, object, uid, whether it is a repeat of `base`)
    let cases = [
        (
            "another note",
            Normal,
            "Resolved",
            "Resolve",
            "uri b",
            "b",
            "u1",
            true,
        ),
        (
            "another type",
            Warning,
            "Resolved",
            "Resolve",
            "uri a",
            "b",
            "u1",
            false,
        ),
        (
            "another reason",
            Normal,
            "Failed",
            "Resolve",
            "uri a",
            "b",
            "u1",
            false,
        ),
        (
            "another action",
            Normal,
            "Resolved",
            "CountPods",
            "uri a",
            "b",
            "u1",
            false,
        ),
        (
            "another object",
            Normal,
            "Resolved",
            "Resolve",
            "uri a",
            "c",
            "u1",
            false,
        ),
        (
            "the object made anew",
            Normal,
            "Resolved",
            "Resolve",
            "uri a",
            "b",
            "u2",
            false,
        ),
    ];
    for (what, type_, reason, action, note, name, uid, same) in cases {
        let key = Key::of(&event(type_, reason, action, note), &reference(name, uid));
        assert_eq!(key == base, same, "{what}");
    }
}

#[test]
fn a_repeat_within_six_minutes_counts_in_the_series() {
    let key = Key::of(
        &event(EventType::Normal, "R", "A", "n"),
        &reference("b", "u"),
    );
    let other = Key::of(
        &event(EventType::Normal, "S", "A", "n"),
        &reference("b", "u"),
    );
    let t0: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
    let at = |secs: i64| t0 + SignedDuration::from_secs(secs);
    let mut recent = Recent::default();
    assert_eq!(recent.repeat(&key, t0), None, "nothing posted yet");
    recent.posted(key.clone(), "b.1".into(), 1, t0);
    // (what, seconds after the first, what the repeat patches)
    let steps = [
        ("a repeat at once", 0, Some(("b.1", 2))),
        ("a second repeat", 359, Some(("b.1", 3))),
        (
            "the window is from the last one",
            359 + 359,
            Some(("b.1", 4)),
        ),
    ];
    for (what, secs, want) in steps {
        let got = recent.repeat(&key, at(secs));
        assert_eq!(got, want.map(|(n, c)| (n.to_string(), c)), "{what}");
        let (name, count) = got.unwrap();
        recent.posted(key.clone(), name, count, at(secs));
    }
    assert_eq!(recent.repeat(&other, at(718)), None, "another event");
    assert_eq!(
        recent.repeat(&key, at(718 + 360)),
        None,
        "six minutes after the last"
    );
    assert!(
        recent.posted.is_empty(),
        "events past their window are forgotten"
    );
}

#[test]
fn an_event_past_its_window_is_no_repeat_between_sweeps() {
    let key = Key::of(
        &event(EventType::Normal, "R", "A", "n"),
        &reference("b", "u"),
    );
    let other = Key::of(
        &event(EventType::Normal, "S", "A", "n"),
        &reference("b", "u"),
    );
    let t0: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
    let at = |secs: i64| t0 + SignedDuration::from_secs(secs);
    let mut recent = Recent::default();
    assert_eq!(recent.repeat(&key, at(0)), None);
    recent.posted(key.clone(), "b.1".into(), 1, at(0));
    assert_eq!(recent.repeat(&other, at(330)), None, "a sweep at 330 s");
    assert_eq!(
        recent.repeat(&key, at(361)),
        None,
        "past its window, not swept yet"
    );
    assert_eq!(recent.posted.len(), 1, "swept at most once a minute");
}
