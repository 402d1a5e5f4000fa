//! Test guest: a workflow step that reads `key` of `scope` (a replicated
//! scope, in the tests) and appends `function@node=value` to `seen`, so a
//! test sees which version every step of a run read.

use databelt::{Context, Error, Scope};

/// The state handed from step to step.
#[databelt::data]
pub struct Reads {
    /// The scope to read.
    pub scope: String,
    /// The key to read.
    pub key: String,
    /// `function@node=value` of every step so far.
    pub seen: Vec<String>,
}

#[databelt::function]
fn read(ctx: &Context, mut input: Reads) -> Result<Reads, Error> {
    let value = Scope::open(&input.scope)?.get_bytes(&input.key)?;
    let text = value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    input.seen.push(format!("{}@{}={text}", ctx.function(), ctx.node_id()));
    Ok(input)
}
