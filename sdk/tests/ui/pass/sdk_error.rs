use databelt::{Context, Error};

#[databelt::data]
pub struct In {
    pub name: String,
    pub tags: Vec<String>,
}

#[databelt::data]
pub enum Out {
    Hello(String),
    Nothing,
}

#[databelt::function]
fn greet(ctx: &Context, input: In) -> Result<Out, Error> {
    let _ = ctx.run_id();
    Ok(Out::Hello(input.name))
}

fn main() {}
