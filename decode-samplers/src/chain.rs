//! An ordered chain of processors ending in a selector.

use decode_core::{Context, LogitsProcessor, Sampler, Selector};

use crate::processors::FnProcessor;
use crate::select::{Greedy, Multinomial};

/// Processors applied in order, then a selector: llama.cpp's sampler chain.
///
/// ```
/// use decode_samplers::{SamplerChain, processors::{Temperature, TopK, TopP}};
/// # fn main() -> decode_core::Result<()> {
/// let chain = SamplerChain::sampling(42)
///     .with(Temperature::new(0.8)?)
///     .with(TopK::new(50, 1)?)
///     .with(TopP::new(0.9, 1)?)
///     .with_fn(|_ctx, logits| logits[0] = f32::NEG_INFINITY); // a closure is a processor too
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SamplerChain {
    processors: Vec<Box<dyn LogitsProcessor>>,
    selector: Box<dyn Selector>,
}

impl std::fmt::Debug for SamplerChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplerChain")
            .field("processors", &self.processors.len())
            .field("greedy", &self.selector.is_greedy())
            .finish()
    }
}

impl SamplerChain {
    /// No processors, then `selector`.
    pub fn new(selector: impl Selector + 'static) -> Self {
        SamplerChain {
            processors: Vec::new(),
            selector: Box::new(selector),
        }
    }

    /// Ends in the most likely token.
    pub fn greedy() -> Self {
        Self::new(Greedy)
    }

    /// Ends in a seeded multinomial draw.
    pub fn sampling(seed: u64) -> Self {
        Self::new(Multinomial::new(seed))
    }

    /// Appends a processor.
    pub fn with(mut self, processor: impl LogitsProcessor + 'static) -> Self {
        self.processors.push(Box::new(processor));
        self
    }

    /// Appends a closure as a processor.
    pub fn with_fn<F>(self, f: F) -> Self
    where
        F: FnMut(&Context<'_>, &mut [f32]) + Clone + Send + 'static,
    {
        self.with(FnProcessor(f))
    }

    /// Appends a boxed processor.
    pub fn push(&mut self, processor: Box<dyn LogitsProcessor>) {
        self.processors.push(processor);
    }

    /// Number of processors.
    pub fn len(&self) -> usize {
        self.processors.len()
    }

    /// Whether there are no processors.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// The selector.
    pub fn selector_mut(&mut self) -> &mut dyn Selector {
        self.selector.as_mut()
    }

    /// Whether the chain ends in greedy selection.
    pub fn is_greedy(&self) -> bool {
        self.selector.is_greedy()
    }
}

impl LogitsProcessor for SamplerChain {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        for p in &mut self.processors {
            p.apply(ctx, logits);
        }
    }

    fn accept(&mut self, token: u32) {
        self.processors.iter_mut().for_each(|p| p.accept(token));
    }

    fn reset(&mut self) {
        self.processors.iter_mut().for_each(|p| p.reset());
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

impl Sampler for SamplerChain {
    fn process(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        self.apply(ctx, logits);
    }

    fn sample(&mut self, ctx: &Context<'_>, logits: &mut [f32]) -> u32 {
        self.apply(ctx, logits);
        self.selector.select(logits)
    }

    fn accept(&mut self, token: u32) {
        LogitsProcessor::accept(self, token);
    }

    fn reset(&mut self) {
        LogitsProcessor::reset(self);
    }
}
