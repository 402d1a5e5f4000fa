//! Travel step 1: reserve a room of the booking's hotel (scope `hotels`, on
//! the hotel's node).

use databelt::{Context, Error};
use travel_types::{Booking, Reserved, reserve};

#[databelt::function]
fn reserve_hotel(ctx: &Context, booking: Booking) -> Result<Reserved, Error> {
    let room = reserve(&ctx.scope("hotels")?, &booking.hotel, booking.capacity, booking.id)?;
    Ok(Reserved { booking, room: Some(room), seat: None })
}
