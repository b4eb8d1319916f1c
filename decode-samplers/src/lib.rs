//! Turning logits into tokens: processors (temperature, top-k, top-p, penalties…), selectors
//! (greedy, seeded multinomial), beam search and speculative decoding.
//!
//! This release has the greedy selector; the rest lands with the sampler issues.

pub use decode_core::generate::argmax as greedy;
