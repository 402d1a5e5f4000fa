#[databelt::data]
struct Order {
    #[serde(with = "databelt::serde_bytes")]
    blob: Vec<u8>,
    #[serde(rename = "orderId")]
    order_id: u64,
}

fn main() {}
