//! The CPU work of a transformer forward pass, for any model: no burn, no model, no file format.
//!
//! - [`element`]: the element types tensors are stored in ([`ElementType`]), their sizes, and
//!   the scan for NaN and ±∞.
//! - [`dense`]: f32/f16/bf16 weights as column tiles and the tile product, one file per
//!   instruction set (AVX-512, AVX2, AVX2's many-row kernel, portable).
//! - [`quant`]: llama.cpp's q8_0 and q4_0 block formats, their layout, and the integer products
//!   (AVX-512 VNNI, AVX-VNNI, AVX2, portable).
//! - [`linear`]: a linear layer `y = x·W + b` on either ([`Linear`]), laid out at load from the
//!   stored bytes.
//! - [`norm`], [`activation`], [`rope`]: layer and RMS norms, GELU/ReLU/SiLU and `exp`, rotary
//!   embeddings.
//! - [`attention`]: causal (grouped-query) attention over a KV cache in host memory.
//! - [`cpu`]: which SIMD level runs (`DECODE_SIMD` caps it) and how many threads
//!   (`RAYON_NUM_THREADS`, checked); [`pool`]: the threads the loops share, which spin between
//!   loops, and [`pool::Split`], which measures whether sharing a model's pass out pays;
//!   [`scratch`]: a reused per-thread buffer; [`memory`]: zeroed weight buffers on huge
//!   pages.
//!
//! Every kernel has a portable reference, and the tests run each SIMD path the machine has
//! against it.

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod dense;
pub mod element;
pub mod linear;
pub mod memory;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod rope;
pub mod scratch;

pub use element::{ElementType, NonFiniteValue};
pub use linear::{Linear, Source};
