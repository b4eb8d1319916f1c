//! `examples/bigram.rs` runs: a model that is not burn, decoded by the same engine with sampling,
//! beam search and speculative decoding (it asserts that speculative greedy equals plain greedy).

#[path = "../examples/bigram.rs"]
mod bigram;

#[test]
fn a_model_that_is_not_burn_decodes_with_every_strategy() {
    bigram::main().unwrap();
}
