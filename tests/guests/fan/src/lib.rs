//! Test and benchmark guest for state fusion. Reads the first `read` keys
//! `s0, s1, …` of the run scope (declared, so the host prefetches them),
//! checks their contents, then writes `write` keys of `size` bytes each
//! from `s{first}` on (`s{i}` filled with byte `i`). The plan travels on
//! with what was found.

use databelt::{Context, Error};

/// The plan, and what the steps found so far.
#[databelt::data]
pub struct Plan {
    /// Run-scope states to write, `s{first}..s{first+write-1}`; then
    /// `first` moves past them and `write` is set to `next_write`.
    pub write: u32,
    /// Index of the first state to write.
    pub first: u32,
    /// What the next step writes.
    pub next_write: u32,
    /// Size of each, bytes.
    pub size: u32,
    /// Run-scope states to read, `s0..s{read-1}`.
    pub read: u32,
    /// States found by the last reading step.
    pub found: u32,
    /// Their bytes.
    pub bytes: u64,
    /// `function@node` of every step so far.
    pub trail: Vec<String>,
}

#[databelt::function(reads = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"])]
fn fan(ctx: &Context, mut plan: Plan) -> Result<Plan, Error> {
    plan.trail.push(format!("{}@{}", ctx.function(), ctx.node_id()));
    let run = ctx.run_state()?;
    if plan.read > 0 {
        let (mut found, mut bytes) = (0u32, 0u64);
        for i in 0..plan.read {
            if let Some(v) = run.get_bytes(&format!("s{i}"))? {
                if v.iter().any(|b| *b != i as u8) {
                    return Err(Error::Other(format!("state s{i} has the wrong contents")));
                }
                found += 1;
                bytes += v.len() as u64;
            }
        }
        plan.found = found;
        plan.bytes = bytes;
    }
    for i in plan.first..plan.first + plan.write {
        run.set_bytes(&format!("s{i}"), &vec![i as u8; plan.size as usize], Default::default())?;
    }
    plan.first += plan.write;
    plan.write = plan.next_write;
    plan.next_write = 0;
    Ok(plan)
}
