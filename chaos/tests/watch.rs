//! Tests of the watch delivery checker: gaps, duplicates, ordering and stray events.

use flotilla_chaos::checker::watch::{
    check_watches, CommittedHistory, EventKind, ReceivedEvent, WatchViolation, WatcherLog,
};
use flotilla_chaos::checker::Verdict;

/// Revisions 1..=6 change /a/1, /a/2, /b/1, {/a/3 + /a/4 + /b/2}, /a/1 (deleted), /a/2.
fn committed() -> CommittedHistory {
    let mut history = CommittedHistory::new();
    let changes: [(u64, &[&str]); 6] = [
        (1, &["/a/1"]),
        (2, &["/a/2"]),
        (3, &["/b/1"]),
        (4, &["/a/3", "/a/4", "/b/2"]),
        (5, &["/a/1"]),
        (6, &["/a/2"]),
    ];
    for (revision, keys) in changes {
        for key in keys {
            let kind = if revision == 5 {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            history.record(revision, key, kind);
        }
    }
    history
}

fn short(violation: &WatchViolation) -> String {
    match violation {
        WatchViolation::OutOfOrder { revision, key, .. } => format!("order {revision} {key}"),
        WatchViolation::Duplicate { revision, key, .. } => format!("dup {revision} {key}"),
        WatchViolation::NotCommitted { revision, key, .. } => format!("phantom {revision} {key}"),
        WatchViolation::BeforeStart { revision, key, .. } => format!("early {revision} {key}"),
        WatchViolation::OutsidePrefix { revision, key, .. } => format!("outside {revision} {key}"),
        WatchViolation::Gap { revision, key } => format!("gap {revision} {key}"),
    }
}

/// Checks one watcher of `prefix` from `start_revision` that received `events`.
fn check(prefix: &str, start_revision: u64, events: &[(u64, &str)], expected: &[&str]) {
    let events = events
        .iter()
        .map(|&(revision, key)| ReceivedEvent {
            revision,
            key: key.to_owned(),
        })
        .collect();
    let name = "w".to_owned();
    let watcher = WatcherLog {
        name,
        prefix: prefix.to_owned(),
        start_revision,
        events,
    };
    let report = check_watches(&committed(), &[watcher]);
    let got: Vec<String> = report.watchers[0].violations.iter().map(short).collect();
    assert_eq!(got, expected, "{report}");
    let verdict = if expected.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    assert_eq!(report.verdict, verdict);
}

#[test]
fn complete_in_order_delivery_is_valid() {
    let all_of_a = [
        (1, "/a/1"),
        (2, "/a/2"),
        (4, "/a/3"),
        (4, "/a/4"),
        (5, "/a/1"),
        (6, "/a/2"),
    ];
    check("/a/", 1, &all_of_a, &[]);
    check(
        "/",
        1,
        &[
            (1, "/a/1"),
            (2, "/a/2"),
            (3, "/b/1"),
            (4, "/b/2"),
            (4, "/a/3"),
            (4, "/a/4"),
        ],
        &[],
    );
    check("/a/", 4, &[(4, "/a/4"), (4, "/a/3"), (5, "/a/1")], &[]);
    check("/b/", 1, &[(3, "/b/1")], &[]);
    check("/a/", 1, &[], &[]);
}

#[test]
fn gaps_are_found_between_start_and_last_received_revision() {
    check(
        "/a/",
        1,
        &[(1, "/a/1"), (4, "/a/3"), (4, "/a/4")],
        &["gap 2 /a/2"],
    );
    check(
        "/a/",
        1,
        &[(2, "/a/2"), (4, "/a/3"), (4, "/a/4")],
        &["gap 1 /a/1"],
    );
    // One key of a multi-key revision went missing.
    check("/a/", 3, &[(4, "/a/3"), (5, "/a/1")], &["gap 4 /a/4"]);
    // Changes after the last received revision are not (yet) gaps.
    check("/a/", 1, &[(1, "/a/1"), (2, "/a/2")], &[]);
}

#[test]
fn duplicates_and_reordering_are_found() {
    check(
        "/a/",
        1,
        &[(1, "/a/1"), (2, "/a/2"), (2, "/a/2")],
        &["dup 2 /a/2"],
    );
    check(
        "/a/",
        4,
        &[(4, "/a/3"), (4, "/a/4"), (4, "/a/3")],
        &["dup 4 /a/3"],
    );
    check("/a/", 1, &[(2, "/a/2"), (1, "/a/1")], &["order 1 /a/1"]);
    check(
        "/a/",
        1,
        &[(1, "/a/1"), (5, "/a/1"), (2, "/a/2"), (6, "/a/2")],
        &["order 2 /a/2", "gap 4 /a/3", "gap 4 /a/4"],
    );
}

#[test]
fn events_that_do_not_belong_are_found() {
    check(
        "/a/",
        1,
        &[(1, "/a/1"), (3, "/a/9")],
        &["phantom 3 /a/9", "gap 2 /a/2"],
    );
    check(
        "/a/",
        1,
        &[(1, "/a/1"), (2, "/a/2"), (3, "/b/1")],
        &["outside 3 /b/1"],
    );
    check("/a/", 2, &[(1, "/a/1"), (2, "/a/2")], &["early 1 /a/1"]);
}

#[test]
fn each_watcher_is_judged_on_its_own() {
    let log = |name: &str, events: &[(u64, &str)]| WatcherLog {
        name: name.to_owned(),
        prefix: "/a/".to_owned(),
        start_revision: 1,
        events: events
            .iter()
            .map(|&(revision, key)| ReceivedEvent {
                revision,
                key: key.to_owned(),
            })
            .collect(),
    };
    let watchers = [
        log("good", &[(1, "/a/1"), (2, "/a/2")]),
        log("lossy", &[(2, "/a/2")]),
    ];
    let report = check_watches(&committed(), &watchers);
    let totals: Vec<(&str, usize)> = report
        .watchers
        .iter()
        .map(|w| (w.name.as_str(), w.violations_total))
        .collect();
    assert_eq!(totals, vec![("good", 0), ("lossy", 1)]);
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["watchers"][1]["violations"][0]["violation"], "gap");
    let summary = report.to_string();
    assert!(!summary.contains('\n'), "{summary}");
    for expected in ["INVALID", "\"lossy\"", "\"/a/1\"", "revision 1"] {
        assert!(
            summary.contains(expected),
            "{expected:?} missing in {summary}"
        );
    }
}
