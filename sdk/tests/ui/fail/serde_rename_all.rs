#[databelt::data]
#[serde(rename_all = "lowercase")]
enum Action {
    Add,
    Remove,
}

fn main() {}
