#[databelt::function]
fn f(ctx: String, input: u32) -> Result<u32, databelt::Error> {
    let _ = ctx;
    Ok(input)
}

fn main() {}
