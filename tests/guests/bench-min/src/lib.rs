//! Benchmark reference (and "component of another world" test input): the
//! smallest useful component built the same way as a Databelt function.

wit_bindgen::generate!({ path: "wit", world: "min" });

struct Min;

impl Guest for Min {
    fn run(input: Vec<u8>) -> Vec<u8> {
        input
    }
}

export!(Min);
