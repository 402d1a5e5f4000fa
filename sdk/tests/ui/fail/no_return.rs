#[databelt::function]
fn f(_ctx: &databelt::Context, _input: u32) {}

fn main() {}
