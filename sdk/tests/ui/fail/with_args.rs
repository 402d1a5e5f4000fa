#[databelt::function(name = "x")]
fn f(_ctx: &databelt::Context, input: u32) -> Result<u32, databelt::Error> {
    Ok(input)
}

fn main() {}
