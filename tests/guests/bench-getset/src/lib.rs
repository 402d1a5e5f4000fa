//! Benchmark subject (`cargo bench -p databelt-host --bench invoke`): what a
//! function author writes with the SDK to read one 1 KiB state and write
//! another — one `get` and one `set` of 1 KiB in the scope named by the
//! input. Returns the first byte it read, plus one.

use databelt::{Context, Error, SetOptions};

#[databelt::function]
fn get_set(ctx: &Context, scope: String) -> Result<u8, Error> {
    let s = ctx.scope(&scope)?;
    let got = s.get_bytes("in")?.unwrap_or_default();
    let mut out = [0u8; 1024];
    out[0] = got.first().copied().unwrap_or(0).wrapping_add(1);
    s.set_bytes("out", &out, SetOptions::default())?;
    Ok(out[0])
}
