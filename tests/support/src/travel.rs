//! The travel-booking workload (examples/travel) and its checker, shared by
//! the loopback test and the multi-process crash test.

use std::collections::HashMap;

use databelt_host::state::ScopedKey;
use databelt_host::state::history::{Committed, serial_order};
use serde_json::{Value, json};

/// The hotels bookings go to (round robin by id); every booking takes the
/// same flight, the hot key.
pub const HOTELS: [&str; 3] = ["ritz", "savoy", "plaza"];

/// The input of booking `id`: hotel by id, flight `lh100`, `capacity`
/// rooms and seats, declined at confirmation when `decline`.
pub fn booking(id: u64, capacity: u32, decline: bool) -> Value {
    let hotel = HOTELS[id as usize % HOTELS.len()];
    json!({"id": id, "hotel": hotel, "flight": "lh100", "capacity": capacity, "decline": decline})
}

/// Reads the state a node holds: `(node, scope, key)` to the value.
pub type ReadState<'a> = &'a dyn Fn(&str, &str, &str) -> Option<Vec<u8>>;

/// What [`check`] found.
#[derive(Debug)]
pub struct Checked {
    /// Bookings confirmed.
    pub confirmed: usize,
    /// Bookings failed (full, declined, or given up).
    pub failed: usize,
    /// Aborted attempts the runtime retried, over every booking.
    pub retried: u64,
}

/// Check the outcome of bookings `0..n` (their final run records by id)
/// against the state the nodes hold (`state(node, scope, key)`; the hotel
/// on s1, the flight on s2, the confirmations on s3), and panic on a
/// violation:
///
/// - every booking ended (a definite answer);
/// - a confirmed booking holds a room, a seat and a confirmation, and its
///   output names them; any other booking holds none of the three;
/// - no overbooking: rooms and seats taken equal the confirmed bookings,
///   and never exceed `capacity`; every seat number is given once;
/// - the committed bookings form a serializable history: each read the
///   counters at the value before its own unit and wrote its unit (a
///   counter's value is its version here), checked with
///   [`serial_order`].
pub fn check(n: u64, capacity: u32, outcomes: &HashMap<u64, Value>, state: ReadState<'_>) -> Checked {
    let counter = |node: &str, scope: &str, key: &str| {
        state(node, scope, key).map_or(0, |b| i64::from_le_bytes(b.try_into().expect("an 8-byte counter")))
    };
    let unit = |node: &str, scope: &str, key: &str| {
        state(node, scope, key).map(|b| postcard::from_bytes::<i64>(&b).expect("a unit number"))
    };
    let mut history = Vec::new();
    let (mut confirmed, mut failed, mut retried) = (0, 0, 0);
    for id in 0..n {
        let record = outcomes.get(&id).unwrap_or_else(|| panic!("booking {id} has no outcome"));
        retried += record["transaction"]["aborts"].as_u64().unwrap_or(0);
        let hotel = HOTELS[id as usize % HOTELS.len()];
        let room = unit("s1", "hotels", &format!("{hotel}/by/{id}"));
        let seat = unit("s2", "flights", &format!("lh100/by/{id}"));
        let booked = state("s3", "bookings", &format!("confirmed/{id}")).is_some();
        match record["status"].as_str() {
            Some("succeeded") => {
                confirmed += 1;
                let (Some(room), Some(seat)) = (room, seat) else {
                    panic!("confirmed booking {id} lacks its room or seat: {record}")
                };
                assert!(booked, "confirmed booking {id} has no confirmation");
                assert_eq!(record["outputs"]["confirm"], json!({"id": id, "room": room, "seat": seat}), "{record}");
                let h = ScopedKey::new("s1/hotels", format!("{hotel}/taken"));
                let f = ScopedKey::new("s2/flights", "lh100/taken");
                let before = |u: i64| (u > 1).then(|| u as u64 - 1);
                history.push(Committed {
                    reads: vec![(h.clone(), before(room)), (f.clone(), before(seat))],
                    writes: vec![(h, room as u64), (f, seat as u64)],
                });
            }
            Some("failed") => {
                failed += 1;
                assert_eq!((room, seat, booked), (None, None, false), "failed booking {id} left a trace: {record}");
            }
            _ => panic!("booking {id} did not end: {record}"),
        }
    }
    let rooms: i64 = HOTELS.iter().map(|h| counter("s1", "hotels", &format!("{h}/taken"))).sum();
    let seats = counter("s2", "flights", "lh100/taken");
    assert_eq!(rooms, confirmed as i64, "one room per confirmed booking");
    assert_eq!(seats, confirmed as i64, "one seat per confirmed booking");
    assert!(seats <= i64::from(capacity), "the flight is overbooked: {seats} seats of {capacity}");
    let mut given: Vec<u64> = history.iter().map(|c| c.writes[1].1).collect();
    given.sort();
    assert_eq!(given, (1..=confirmed as u64).collect::<Vec<_>>(), "every seat given once");
    if let Err(e) = serial_order(&history) {
        panic!("the committed bookings are not serializable: {e:?}");
    }
    Checked { confirmed, failed, retried }
}
