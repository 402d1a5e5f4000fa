//! Transactions across steps and nodes on a continuum of real hosts on
//! loopback: the travel booking (hotel on s1, flight on s2, confirmation on
//! s3) commits both reservations or neither, never overbooks under
//! concurrent bookings, and leaves no prepared part and no lock behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::runs::{deploy, show, start, until_clean};
use common::travel;
use databelt_testbed::Cluster;
use serde_json::{Value, json};

/// Booking `id` at the ritz.
fn booking(id: u64, capacity: u32, decline: bool) -> Value {
    json!({"id": id, "hotel": "ritz", "flight": "lh100", "capacity": capacity, "decline": decline})
}

/// A counter's value in `scope` on `node` (0 when absent).
fn counter(cluster: &Cluster, node: &str, scope: &str, key: &str) -> i64 {
    let v = cluster.node(node).unwrap().host.state().get(scope, key).unwrap();
    v.map_or(0, |b| i64::from_le_bytes(b.try_into().unwrap()))
}

fn exists(cluster: &Cluster, node: &str, scope: &str, key: &str) -> bool {
    cluster.node(node).unwrap().host.state().exists(scope, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_reserves_both_or_neither() {
    let (cluster, dir) = common::chain_cluster().await;
    deploy(&cluster, "cloud", &common::write_travel(dir.path(), ["s1", "s2", "s3"], Some(""))).await;

    let (status, ok) = start(&cluster, "cloud", "travel", &booking(1, 10, false), "?wait_ms=20000").await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["outputs"]["confirm"], json!({"id": 1, "room": 1, "seat": 1}), "{ok}");
    assert_eq!(ok["transaction"]["committed"], true, "{ok}");
    // Succeeded = the commit is decided (durable on the origin); each node
    // applies its part when the decision reaches it.
    until_clean(&cluster).await;
    assert_eq!(counter(&cluster, "s1", "hotels", "ritz/taken"), 1);
    assert_eq!(counter(&cluster, "s2", "flights", "lh100/taken"), 1);
    assert!(exists(&cluster, "s3", "bookings", "confirmed/1"));

    // Declined at the last step: the hotel and the flight, prepared on
    // their nodes, are released; nothing of the booking stays anywhere.
    let (_, declined) = start(&cluster, "cloud", "travel", &booking(2, 10, true), "?wait_ms=20000").await;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert_eq!(declined["failure"]["step"], "confirm", "{declined}");
    assert!(declined["failure"]["message"].as_str().unwrap().contains("payment declined"), "{declined}");
    until_clean(&cluster).await;
    assert_eq!(counter(&cluster, "s1", "hotels", "ritz/taken"), 1, "the hotel reservation was rolled back");
    assert_eq!(counter(&cluster, "s2", "flights", "lh100/taken"), 1, "the flight reservation was rolled back");
    assert!(!exists(&cluster, "s1", "hotels", "ritz/by/2") && !exists(&cluster, "s2", "flights", "lh100/by/2"));
    assert!(!exists(&cluster, "s3", "bookings", "confirmed/2"));

    // Plain writes of the keys work again (no lock is left).
    let s1 = cluster.node("s1").unwrap().host.state();
    assert_eq!(s1.increment("hotels", "ritz/taken", 0).unwrap(), 1);
}

/// 60 concurrent bookings (every fifth declined) over three hotels of 12
/// rooms and one flight of 12 seats: the flight is the hot key, reserved
/// after the hotels, so attempts abort on it and are retried whole. No
/// overbooking, both or neither, every booking ends, and the history of the
/// committed bookings is serializable ([`common::travel::check`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_never_overbook_and_commit_a_serializable_history() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::write_travel(dir.path(), ["s1", "s2", "s3"], Some("retries = 40\ntimeout_ms = 5000"));
    deploy(&cluster, "cloud", &path).await;
    let (bookings, capacity) = (60u64, 12u32);
    let mut runs = Vec::new();
    for id in 0..bookings {
        let origin = ["cloud", "s1", "s2", "s3"][id as usize % 4];
        let (status, v) = start(&cluster, origin, "travel", &travel::booking(id, capacity, id % 5 == 4), "").await;
        assert_eq!(status, 202, "{v}");
        runs.push((id, origin, v["run_id"].as_str().unwrap().to_string()));
    }
    let mut outcomes = HashMap::new();
    for (id, origin, run) in &runs {
        outcomes.insert(*id, show(&cluster, origin, run, 120_000).await);
    }
    until_clean(&cluster).await;
    let state = |node: &str, scope: &str, key: &str| cluster.node(node).unwrap().host.state().get(scope, key).unwrap();
    let checked = travel::check(bookings, capacity, &outcomes, &state);
    eprintln!("{checked:?}");
    assert_eq!(checked.confirmed, capacity as usize, "the flight fills up");
    assert!(checked.retried > 0, "the hot flight made attempts abort and retry");
}
