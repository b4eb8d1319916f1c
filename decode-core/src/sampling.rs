//! The sampling contracts: a [`LogitsProcessor`] transforms one step's logits, a [`Selector`] picks
//! a token from them, and a [`Sampler`] does both for the generation loop.
//!
//! Implementations live in `decode-samplers`; application code can write its own.

/// What a processor may look at besides the logits: the sequence so far.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The prompt followed by every token generated so far.
    pub tokens: &'a [u32],
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
}

impl<'a> Context<'a> {
    /// A context over `tokens`, the first `prompt_len` of which are the prompt.
    pub fn new(tokens: &'a [u32], prompt_len: usize) -> Self {
        Context { tokens, prompt_len }
    }

    /// The generated tokens only.
    pub fn generated(&self) -> &'a [u32] {
        &self.tokens[self.prompt_len.min(self.tokens.len())..]
    }
}

/// Transforms the logits of one step in place (temperature, top-k, penalties…).
///
/// `-inf` removes a token. Stateful processors update themselves in [`LogitsProcessor::accept`],
/// which is called once for every token that is kept (speculative decoding calls it only for
/// accepted tokens), and start over in [`LogitsProcessor::reset`].
pub trait LogitsProcessor: Send {
    /// Transforms `logits` (one entry per vocabulary id) for the next token after `ctx`.
    fn apply(&mut self, ctx: &Context<'_>, logits: &mut [f32]);

    /// A token was appended to the sequence.
    fn accept(&mut self, _token: u32) {}

    /// Forget all state: a new sequence begins.
    fn reset(&mut self) {}

    /// A boxed copy, state included (for beams and parallel sequences).
    fn boxed_clone(&self) -> Box<dyn LogitsProcessor>;
}

impl Clone for Box<dyn LogitsProcessor> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// Picks a token from processed logits.
pub trait Selector: Send {
    /// The chosen id.
    fn select(&mut self, logits: &[f32]) -> u32;

    /// A number in `[0, 1)` from the selector's random stream (speculative decoding's acceptance
    /// test draws from the same stream as sampling). Deterministic selectors return 0.
    fn uniform(&mut self) -> f64 {
        0.0
    }

    /// Draws an id from `probs` (non-negative, not necessarily normalised): speculative decoding
    /// samples its corrections and bonus tokens this way. Deterministic selectors take the largest.
    fn draw(&mut self, probs: &[f32]) -> u32 {
        crate::argmax(probs)
    }

    /// Whether [`Selector::select`] always takes the most likely token.
    fn is_greedy(&self) -> bool {
        false
    }

    /// A boxed copy, random state included.
    fn boxed_clone(&self) -> Box<dyn Selector>;
}

impl Clone for Box<dyn Selector> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// Processes a step's logits and picks the next token: what the generation loop drives.
pub trait Sampler: Send {
    /// Transforms `logits` in place, as every processor would.
    fn process(&mut self, ctx: &Context<'_>, logits: &mut [f32]);

    /// Processes `logits` and picks the next token.
    fn sample(&mut self, ctx: &Context<'_>, logits: &mut [f32]) -> u32;

    /// A token was appended to the sequence.
    fn accept(&mut self, token: u32);

    /// A new sequence begins.
    fn reset(&mut self);
}
