#[databelt::function]
fn f(_ctx: &databelt::Context, input: &str) -> Result<u32, databelt::Error> {
    Ok(input.len() as u32)
}

fn main() {}
