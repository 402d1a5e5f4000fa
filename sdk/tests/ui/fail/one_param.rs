#[databelt::function]
fn f(input: u32) -> Result<u32, databelt::Error> {
    Ok(input)
}

fn main() {}
