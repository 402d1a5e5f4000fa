//! The travel-booking workflow (Beldi's travel reservation, after
//! DeathStarBench): reserve a hotel room on one node, a flight seat on
//! another, confirm on a third — as one transaction: both or neither, and
//! never more than the capacity.
//!
//! `Booking` → reserve-hotel → `Reserved` → reserve-flight → `Reserved` →
//! confirm → `Confirmed`.

/// One booking request.
#[databelt::data]
pub struct Booking {
    /// The booking's id (unique per client).
    pub id: u64,
    /// The hotel.
    pub hotel: String,
    /// The flight.
    pub flight: String,
    /// Rooms of the hotel and seats of the flight, set by the first booking
    /// that finds them unset (kept in state; later bookings' value is not
    /// used).
    pub capacity: u32,
    /// Make the confirmation fail (a declined payment): the transaction
    /// aborts and neither reservation stays.
    pub decline: bool,
}

/// A booking with the resources reserved so far.
#[databelt::data]
pub struct Reserved {
    /// The request.
    pub booking: Booking,
    /// The room number (1-based), once reserved.
    pub room: Option<u32>,
    /// The seat number (1-based), once reserved.
    pub seat: Option<u32>,
}

/// A confirmed booking.
#[databelt::data]
pub struct Confirmed {
    /// The booking's id.
    pub id: u64,
    /// Its room.
    pub room: u32,
    /// Its seat.
    pub seat: u32,
}

/// Reserve one unit of `resource` (a hotel or a flight) in `scope`: the
/// capacity is set on first use; the unit count goes up by one unless it is
/// full; the reservation is recorded under `{resource}/by/{booking}`.
/// Returns the unit number (1-based).
pub fn reserve(scope: &databelt::Scope, resource: &str, capacity: u32, booking: u64) -> Result<u32, databelt::Error> {
    let cap_key = format!("{resource}/capacity");
    let capacity = match scope.get::<u32>(&cap_key)? {
        Some(capacity) => capacity,
        None => {
            scope.set(&cap_key, &capacity)?;
            capacity
        }
    };
    let taken = scope.increment(&format!("{resource}/taken"), 0)?;
    if taken >= i64::from(capacity) {
        return Err(databelt::Error::Other(format!("{resource} is full ({capacity} of {capacity} taken)")));
    }
    let unit = scope.increment(&format!("{resource}/taken"), 1)?;
    scope.set(&format!("{resource}/by/{booking}"), &unit)?;
    u32::try_from(unit).map_err(|_| databelt::Error::Other("unit number out of range".into()))
}
