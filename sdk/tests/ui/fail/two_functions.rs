#[databelt::function]
fn first(_ctx: &databelt::Context, input: u32) -> Result<u32, databelt::Error> {
    Ok(input)
}

#[databelt::function]
fn second(_ctx: &databelt::Context, input: u32) -> Result<u32, databelt::Error> {
    Ok(input)
}

fn main() {}
