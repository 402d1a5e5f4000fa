//! Test guest: a workflow step. Appends `function@node` to the trail, so a
//! test sees where every step of a run really ran, and passes the data on
//! (optionally resized, so a step can produce a state of a chosen size).

use databelt::{Context, Error};

/// The state handed from step to step.
#[databelt::data]
pub struct Blob {
    /// `function@node` of every step so far.
    pub trail: Vec<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// When set, the payload is resized to this many bytes before passing on.
    pub resize: Option<u32>,
}

#[databelt::function]
fn stage(ctx: &Context, mut input: Blob) -> Result<Blob, Error> {
    input.trail.push(format!("{}@{}", ctx.function(), ctx.node_id()));
    if let Some(n) = input.resize.take() {
        input.data.resize(n as usize, 7);
    }
    Ok(input)
}
