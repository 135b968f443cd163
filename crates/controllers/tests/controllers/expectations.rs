//! Expectations keep a ReplicaSet from being reconciled on a cache that lags its own writes.

use flotilla_controllers::expectations::{Expectations, EXPECTATIONS_TIMEOUT_MS};
use flotilla_controllers::PodRef;

use crate::fixtures::T0;

fn pod_ref(uid: &str) -> PodRef {
    PodRef {
        namespace: "default".to_owned(),
        name: uid.to_owned(),
        uid: uid.to_owned(),
    }
}

#[test]
fn an_owner_waits_until_its_writes_are_seen() {
    let mut expectations = Expectations::new();
    assert!(expectations.satisfied("rs", T0), "nothing pending");
    assert!(expectations.expect("rs", 2, &[pod_ref("p1")], T0));
    assert!(!expectations.satisfied("rs", T0));
    expectations.observed_create("rs");
    expectations.observed_delete("rs", "p1");
    expectations.observed_delete("rs", "unrelated");
    assert!(!expectations.satisfied("rs", T0), "one create still unseen");
    expectations.observed_create("rs");
    assert!(expectations.satisfied("rs", T0));
    assert!(expectations.satisfied("other", T0));
}

#[test]
fn lost_events_only_delay_until_the_timeout() {
    let mut expectations = Expectations::new();
    expectations.expect("rs", 1, &[], T0);
    assert!(!expectations.satisfied("rs", T0 + EXPECTATIONS_TIMEOUT_MS - 1));
    assert!(expectations.satisfied("rs", T0 + EXPECTATIONS_TIMEOUT_MS));
    expectations.expect("rs", 1, &[], T0);
    expectations.forget("rs");
    assert!(expectations.satisfied("rs", T0));
}
