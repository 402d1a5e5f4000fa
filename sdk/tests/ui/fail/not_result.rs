#[databelt::function]
fn f(_ctx: &databelt::Context, input: u32) -> u32 {
    input
}

fn main() {}
