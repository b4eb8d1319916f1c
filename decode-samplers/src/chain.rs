//! An ordered chain of processors ending in a selector.

use decode_core::sampling::Candidates;
use decode_core::{Context, LogitsProcessor, Selector};

use crate::processors::FnProcessor;
use crate::select::{Greedy, Multinomial};

/// Processors applied in order, then a selector: llama.cpp's sampler chain.
///
/// Like llama.cpp's chain, it works on the dense row only until a processor that cuts the
/// vocabulary ([`LogitsProcessor::cuts`]: top-k, min-p, top-p, typical-p) has run; from there the
/// remaining processors and the selector work on the survivors ([`Candidates`]), and the dense row
/// is written back at the end. Results are the dense computation's, bit for bit.
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
    /// Scratch, not state: the survivors once a processor has cut the vocabulary.
    candidates: Candidates,
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
            candidates: Candidates::new(),
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

    /// Processes `logits` in place and picks the next token. `logits` is left holding the dense
    /// processed row (masked tokens `−∞`), as [`LogitsProcessor::apply`] leaves it, so the caller
    /// can check the chosen token's processed logit and the whole row.
    pub fn sample(&mut self, ctx: &Context<'_>, logits: &mut [f32]) -> u32 {
        if self.run(ctx, logits) {
            let id = self.selector.select_candidates(&self.candidates);
            self.write_back(logits);
            id
        } else {
            self.selector.select(logits)
        }
    }

    /// Runs the processors: dense until the first cut, then on the candidates. Whether it cut
    /// (then the result is in `self.candidates`, and `logits` is to be written back).
    fn run(&mut self, ctx: &Context<'_>, logits: &mut [f32]) -> bool {
        let mut sparse = false;
        for p in &mut self.processors {
            if sparse {
                p.apply_candidates(ctx, &mut self.candidates);
            } else if p.cuts() {
                p.apply_and_gather(ctx, logits, &mut self.candidates);
                if self.candidates.vocab_size() != logits.len() {
                    // A processor broke the contract (left candidates of another row): the row
                    // is the best guess left.
                    self.candidates.gather(logits);
                }
                sparse = true;
            } else {
                p.apply(ctx, logits);
            }
        }
        sparse
    }

    /// Makes `logits` the dense form of the final candidates. A fill (a plain store stream) and a
    /// scatter: cheaper than the cut masking the row itself.
    fn write_back(&self, logits: &mut [f32]) {
        logits.fill(f32::NEG_INFINITY);
        self.candidates.scatter(logits);
    }
}

impl LogitsProcessor for SamplerChain {
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]) {
        if self.run(ctx, logits) {
            self.write_back(logits);
        }
    }

    fn cuts(&self) -> bool {
        self.processors.iter().any(|p| p.cuts())
    }

    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        for p in &mut self.processors {
            p.apply_candidates(ctx, candidates);
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
