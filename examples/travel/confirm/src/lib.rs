//! Travel step 3: confirm the booking (scope `bookings`, on the agency's
//! node) — or decline it, which aborts the whole transaction.

use databelt::{Context, Error};
use travel_types::{Confirmed, Reserved};

#[databelt::function]
fn confirm(ctx: &Context, input: Reserved) -> Result<Confirmed, Error> {
    let b = &input.booking;
    if b.decline {
        return Err(Error::Other(format!("booking {}: payment declined", b.id)));
    }
    let (Some(room), Some(seat)) = (input.room, input.seat) else {
        return Err(Error::Other(format!("booking {}: a reservation is missing", b.id)));
    };
    let record = format!("{} room {room}, {} seat {seat}", b.hotel, b.flight);
    ctx.scope("bookings")?.set(&format!("confirmed/{}", b.id), &record)?;
    Ok(Confirmed { id: b.id, room, seat })
}
