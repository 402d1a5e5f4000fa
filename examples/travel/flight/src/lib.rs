//! Travel step 2: reserve a seat on the booking's flight (scope `flights`,
//! on the airline's node).

use databelt::{Context, Error};
use travel_types::{Reserved, reserve};

#[databelt::function]
fn reserve_flight(ctx: &Context, input: Reserved) -> Result<Reserved, Error> {
    let b = &input.booking;
    let seat = reserve(&ctx.scope("flights")?, &b.flight, b.capacity, b.id)?;
    Ok(Reserved { seat: Some(seat), ..input })
}
