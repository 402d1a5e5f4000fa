//! Test guest: a fan-in step. Its input is the tuple of its predecessors'
//! outputs (in the order of the step's `after` list); it joins them.

use databelt::{Context, Error};

/// The state handed from step to step (same layout as the `stage` guest's).
#[databelt::data]
pub struct Blob {
    /// `function@node` of every step so far.
    pub trail: Vec<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// Unused here; kept so the layout matches `stage`.
    pub resize: Option<u32>,
}

#[databelt::function]
fn merge(ctx: &Context, input: (Blob, Blob)) -> Result<Blob, Error> {
    let (mut a, b) = input;
    a.trail.extend(b.trail);
    a.trail.push(format!("{}@{}", ctx.function(), ctx.node_id()));
    a.data.extend(b.data);
    a.resize = None;
    Ok(a)
}
