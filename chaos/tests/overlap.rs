//! Tests of the double-run checker: runs rebuilt from start/stop logs and host kills, and every
//! span where one pod uid ran on two hosts.

use flotilla_chaos::checker::overlap::{
    check_no_overlap, HostKill, OverlapConfig, OverlapReport, PodEvent, PodRecord,
};
use flotilla_chaos::checker::Verdict;

/// Grace after a host kill during which its pods are assumed to still run.
const GRACE_NS: u64 = 50;

/// A record line: `(pod, host, "start" | "stop" | "kill", at_ns)`; "kill" ignores the pod.
type Line<'a> = (&'a str, &'a str, &'a str, u64);

fn report(lines: &[Line]) -> OverlapReport {
    let mut records = Vec::new();
    let mut kills = Vec::new();
    for &(pod, host, what, at_ns) in lines {
        let event = match what {
            "start" => PodEvent::Started,
            "stop" => PodEvent::Stopped,
            _ => {
                kills.push(HostKill {
                    host: host.to_owned(),
                    at_ns,
                });
                continue;
            }
        };
        let (pod_uid, host) = (pod.to_owned(), host.to_owned());
        records.push(PodRecord {
            pod_uid,
            host,
            event,
            at_ns,
        });
    }
    check_no_overlap(
        &records,
        &kills,
        &OverlapConfig {
            killed_host_grace_ns: GRACE_NS,
        },
    )
}

/// Expected overlaps: `(pod, first host, second host, from_ns, until_ns)`.
fn check(lines: &[Line], expected: &[(&str, &str, &str, u64, Option<u64>)]) {
    let report = report(lines);
    let got: Vec<(&str, &str, &str, u64, Option<u64>)> = report
        .overlaps
        .iter()
        .map(|o| {
            (
                o.pod_uid.as_str(),
                o.first_host.as_str(),
                o.second_host.as_str(),
                o.from_ns,
                o.until_ns,
            )
        })
        .collect();
    assert_eq!(got, expected, "{report}");
    let verdict = if expected.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    assert_eq!(report.verdict, verdict);
}

#[test]
fn clean_handovers_do_not_overlap() {
    check(
        &[
            ("p", "h1", "start", 0),
            ("p", "h1", "stop", 100),
            ("p", "h2", "start", 150),
        ],
        &[],
    );
    // Stopping at the very instant the other host starts is a handover, not an overlap.
    check(
        &[
            ("p", "h1", "start", 0),
            ("p", "h1", "stop", 100),
            ("p", "h2", "start", 100),
        ],
        &[],
    );
    // Different pods may run anywhere at once.
    check(&[("p", "h1", "start", 0), ("q", "h2", "start", 0)], &[]);
    // A restart on the same host is not a double run.
    check(
        &[
            ("p", "h1", "start", 0),
            ("p", "h1", "start", 50),
            ("p", "h1", "stop", 60),
        ],
        &[],
    );
}

#[test]
fn overlapping_runs_are_reported_with_their_span() {
    check(
        &[
            ("p", "h1", "start", 0),
            ("p", "h2", "start", 50),
            ("p", "h1", "stop", 100),
        ],
        &[("p", "h1", "h2", 50, Some(100))],
    );
    check(
        &[("p", "h1", "start", 0), ("p", "h2", "start", 10)],
        &[("p", "h1", "h2", 10, None)],
    );
    check(
        &[
            ("p", "h1", "start", 0),
            ("p", "h2", "start", 10),
            ("p", "h2", "stop", 20),
            ("p", "h3", "start", 30),
            ("p", "h1", "stop", 40),
        ],
        &[
            ("p", "h1", "h2", 10, Some(20)),
            ("p", "h1", "h3", 30, Some(40)),
        ],
    );
}

#[test]
fn a_killed_hosts_pods_run_until_the_kill_plus_grace() {
    fn with(extra: &[Line<'static>]) -> Vec<Line<'static>> {
        [&[("p", "h1", "start", 0), ("", "h1", "kill", 100)], extra].concat()
    }
    check(
        &with(&[("p", "h2", "start", 120)]),
        &[("p", "h1", "h2", 120, Some(150))],
    );
    check(&with(&[("p", "h2", "start", 150)]), &[]);
    // The pod's own stop record, if earlier, ends the run.
    check(
        &with(&[("p", "h1", "stop", 110), ("p", "h2", "start", 120)]),
        &[],
    );
    // A stop record after the grace does not stretch the run.
    check(
        &with(&[("p", "h2", "start", 120), ("p", "h1", "stop", 400)]),
        &[("p", "h1", "h2", 120, Some(150))],
    );
    // A run started after the host came back is not cut short by the earlier kill.
    check(
        &with(&[("q", "h1", "start", 200), ("q", "h2", "start", 300)]),
        &[("q", "h1", "h2", 300, None)],
    );
}

#[test]
fn report_counts_and_summarises() {
    let report = report(&[
        ("p", "h1", "stop", 5),
        ("p", "h1", "start", 10),
        ("q", "h2", "start", 10),
        ("p", "h2", "start", 20),
    ]);
    let counts = (
        report.pods_checked,
        report.runs_checked,
        report.unmatched_stops,
    );
    assert_eq!(counts, (2, 3, 1));
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["overlaps"][0]["second_host"], "h2");
    let summary = report.to_string();
    assert!(!summary.contains('\n'), "{summary}");
    for expected in ["INVALID", "pod p ran on h1 and h2 from 20 ns"] {
        assert!(
            summary.contains(expected),
            "{expected:?} missing in {summary}"
        );
    }
}
