struct Plain {
    x: u32,
}

#[databelt::function]
fn f(_ctx: &databelt::Context, input: Plain) -> Result<u32, databelt::Error> {
    Ok(input.x)
}

fn main() {}
