//! Transactions across steps and nodes on a continuum of real hosts on
//! loopback: the travel booking (hotel on s1, flight on s2, confirmation on
//! s3) commits both reservations or neither, never overbooks under
//! concurrent bookings, and leaves no prepared part and no lock behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::runs::{deploy, show, start, until_clean};
use databelt_host::state::ScopedKey;
use databelt_host::state::history::{Committed, serial_order};
use databelt_testbed::Cluster;
use serde_json::{Value, json};

fn booking(id: u64, capacity: u32, decline: bool) -> Value {
    booking_at("ritz", id, capacity, decline)
}

fn booking_at(hotel: &str, id: u64, capacity: u32, decline: bool) -> Value {
    json!({"id": id, "hotel": hotel, "flight": "lh100", "capacity": capacity, "decline": decline})
}

const HOTELS: [&str; 3] = ["ritz", "savoy", "plaza"];

/// A counter's value in `scope` on `node` (0 when absent).
fn counter(cluster: &Cluster, node: &str, scope: &str, key: &str) -> i64 {
    let v = cluster.node(node).unwrap().host.state().get(scope, key).unwrap();
    v.map_or(0, |b| i64::from_le_bytes(b.try_into().unwrap()))
}

fn exists(cluster: &Cluster, node: &str, scope: &str, key: &str) -> bool {
    cluster.node(node).unwrap().host.state().exists(scope, key).unwrap()
}

/// The unit (room or seat) a booking holds, decoded from its postcard i64.
fn unit(cluster: &Cluster, node: &str, scope: &str, key: &str) -> Option<i64> {
    let bytes = cluster.node(node).unwrap().host.state().get(scope, key).unwrap()?;
    Some(postcard::from_bytes::<i64>(&bytes).unwrap())
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
/// committed bookings (what each read and wrote of the counters) is
/// serializable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_never_overbook_and_commit_a_serializable_history() {
    let (cluster, dir) = common::chain_cluster().await;
    let path = common::write_travel(dir.path(), ["s1", "s2", "s3"], Some("retries = 40\ntimeout_ms = 5000"));
    deploy(&cluster, "cloud", &path).await;
    let (bookings, capacity) = (60u64, 12u32);
    let mut runs = Vec::new();
    for id in 0..bookings {
        let origin = ["cloud", "s1", "s2", "s3"][id as usize % 4];
        let input = booking_at(HOTELS[id as usize % 3], id, capacity, id % 5 == 4);
        let (status, v) = start(&cluster, origin, "travel", &input, "").await;
        assert_eq!(status, 202, "{v}");
        runs.push((id, origin, v["run_id"].as_str().unwrap().to_string()));
    }
    let mut outcome: HashMap<u64, Value> = HashMap::new();
    for (id, origin, run) in &runs {
        let record = show(&cluster, origin, run, 120_000).await;
        assert_ne!(record["status"], "running", "every booking gets a definite answer: {record}");
        outcome.insert(*id, record);
    }
    until_clean(&cluster).await;

    let confirmed: Vec<u64> = (0..bookings).filter(|id| outcome[id]["status"] == "succeeded").collect();
    let aborts: u64 = outcome.values().map(|r| r["transaction"]["aborts"].as_u64().unwrap_or(0)).sum();
    eprintln!("{} of {bookings} bookings confirmed, {aborts} aborted attempts retried", confirmed.len());
    assert_eq!(confirmed.len(), capacity as usize, "the flight fills up: {outcome:?}");
    let rooms_taken: i64 = HOTELS.iter().map(|h| counter(&cluster, "s1", "hotels", &format!("{h}/taken"))).sum();
    assert_eq!(rooms_taken, i64::from(capacity), "one room per confirmed booking");
    assert_eq!(counter(&cluster, "s2", "flights", "lh100/taken"), i64::from(capacity));

    let mut history = Vec::new();
    for id in 0..bookings {
        let hotel = HOTELS[id as usize % 3];
        let room = unit(&cluster, "s1", "hotels", &format!("{hotel}/by/{id}"));
        let seat = unit(&cluster, "s2", "flights", &format!("lh100/by/{id}"));
        let booked = exists(&cluster, "s3", "bookings", &format!("confirmed/{id}"));
        if confirmed.contains(&id) {
            let (room, seat) = (room.unwrap(), seat.unwrap());
            assert_eq!(outcome[&id]["outputs"]["confirm"], json!({"id": id, "room": room, "seat": seat}));
            assert!(booked);
            // Each committed booking read each counter at the value before
            // its own unit and wrote its unit: counters' values are their
            // versions here.
            let h = ScopedKey::new("s1/hotels", format!("{hotel}/taken"));
            let f = ScopedKey::new("s2/flights", "lh100/taken");
            history.push(Committed {
                reads: vec![
                    (h.clone(), (room > 1).then(|| room as u64 - 1)),
                    (f.clone(), (seat > 1).then(|| seat as u64 - 1)),
                ],
                writes: vec![(h, room as u64), (f, seat as u64)],
            });
        } else {
            assert_eq!((room, seat, booked), (None, None, false), "booking {id} left a trace: {}", outcome[&id]);
            let failure = &outcome[&id]["failure"];
            let why = failure["message"].as_str().unwrap();
            assert!(why.contains("full") || why.contains("declined"), "{failure}");
        }
    }
    let mut seats: Vec<u64> = history.iter().map(|c| c.writes[1].1).collect();
    seats.sort();
    assert_eq!(seats, (1..=u64::from(capacity)).collect::<Vec<_>>(), "every seat once");
    serial_order(&history).expect("the committed bookings are serializable");
}
