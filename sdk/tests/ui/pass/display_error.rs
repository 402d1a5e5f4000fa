#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mine")
    }
}

#[databelt::function]
fn double(_ctx: &databelt::Context, input: u32) -> Result<u64, MyError> {
    Ok(u64::from(input) * 2)
}

fn main() {}
