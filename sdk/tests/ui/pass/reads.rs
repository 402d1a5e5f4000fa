// Declared run-scope keys, read through `Context::run_state`.
#[databelt::function(reads = ["frame", "mask"])]
fn f(ctx: &databelt::Context, input: u32) -> Result<u32, databelt::Error> {
    let run = ctx.run_state()?;
    let frame: Option<u32> = run.get("frame")?;
    Ok(input + frame.unwrap_or(0))
}

fn main() {}
