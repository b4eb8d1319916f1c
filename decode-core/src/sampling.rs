//! The sampling contracts: a [`LogitsProcessor`] transforms one step's logits and a [`Selector`]
//! picks a token from them (`decode-samplers`' `SamplerChain` runs processors, then a selector).
//!
//! Both also work on [`Candidates`]: the few tokens left once a processor has cut the vocabulary
//! (top-k, min-p…), so that the rest of a chain and the draw cost what the survivors cost, not what
//! the vocabulary costs (llama.cpp's chain does the same).
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

    /// Whether this processor cuts the vocabulary down to a few candidates (top-k, min-p, top-p,
    /// typical-p): a chain switches to [`Candidates`] once such a processor has run.
    fn cuts(&self) -> bool {
        false
    }

    /// [`LogitsProcessor::apply`] on the sparse form: `candidates` stands for the dense row where
    /// every id it does not list is `−∞`, and must afterwards stand for the row `apply` would have
    /// left. A processor may remove entries or set them to `−∞`.
    ///
    /// The default is right for any processor: it scatters the candidates into a dense row, calls
    /// `apply`, and gathers back the entries that are not `−∞` (O(vocabulary); the built-in
    /// processors do it in O(candidates)).
    fn apply_candidates(&mut self, ctx: &Context<'_>, candidates: &mut Candidates) {
        candidates.with_dense(|row| self.apply(ctx, row));
    }

    /// The cut itself: `candidates` becomes the sparse form of what [`LogitsProcessor::apply`]
    /// makes of the dense `logits` (the entries that are not `−∞`, as [`Candidates::gather`]
    /// takes them). `logits` may be left anything: the caller writes the dense row back from the
    /// candidates, so a processor that finds its survivors without a pass over the row need not
    /// mask it.
    ///
    /// The default is `apply`, then `gather`.
    fn apply_and_gather(
        &mut self,
        ctx: &Context<'_>,
        logits: &mut [f32],
        candidates: &mut Candidates,
    ) {
        self.apply(ctx, logits);
        candidates.gather(logits);
    }

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

    /// [`Selector::select`] on the sparse form: the id `select` would choose from the dense row
    /// `candidates` stands for, with the same use of any random stream (so a seed gives the same
    /// tokens either way).
    ///
    /// The default scatters the candidates into a dense row (O(vocabulary)) and calls `select`.
    fn select_candidates(&mut self, candidates: &Candidates) -> u32 {
        let mut row = Vec::new();
        candidates.scatter_into(&mut row);
        self.select(&row)
    }

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

/// The tokens still in play once a processor has cut the vocabulary: their ids, in ascending order,
/// their logits, and the vocabulary size.
///
/// It stands for the dense row of [`Candidates::vocab_size`] logits in which every id it does not
/// list is `−∞`. A listed id may hold any value, `−∞` included (a processor may mask an entry in
/// place instead of removing it), NaN and `+∞` too (they stay visible to the caller's checks once
/// the row is written back). Ascending ids keep every order-dependent computation (sums,
/// cumulative walks, first-on-ties) the same as on the dense row, so results are bit for bit the
/// dense ones.
#[derive(Default)]
pub struct Candidates {
    ids: Vec<u32>,
    logits: Vec<f32>,
    vocab: usize,
    /// A dense row reused by [`Candidates::with_dense`] (scratch, not part of the value: neither
    /// cloned nor shown).
    dense: Vec<f32>,
}

impl Clone for Candidates {
    fn clone(&self) -> Self {
        Candidates {
            ids: self.ids.clone(),
            logits: self.logits.clone(),
            vocab: self.vocab,
            dense: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Candidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidates")
            .field("ids", &self.ids)
            .field("logits", &self.logits)
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl Candidates {
    /// No candidates, vocabulary size 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// No candidates (every token `−∞`) in a vocabulary of `vocab_size` ids.
    pub fn clear(&mut self, vocab_size: usize) {
        self.ids.clear();
        self.logits.clear();
        self.vocab = vocab_size;
    }

    /// The size of the dense row this stands for.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Number of listed ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is listed (every token is `−∞`).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The listed ids, ascending.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The listed logits, in the order of [`Candidates::ids`].
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The listed logits, to change in place.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }

    /// The ids and, mutably, their logits (for processors that change logits by id).
    pub fn ids_and_logits_mut(&mut self) -> (&[u32], &mut [f32]) {
        (&self.ids, &mut self.logits)
    }

    /// The logit of `id`, when listed (binary search).
    pub fn get_mut(&mut self, id: u32) -> Option<&mut f32> {
        let i = self.ids.binary_search(&id).ok()?;
        self.logits.get_mut(i)
    }

    /// Appends `id` with `logit`. Refused (`false`, nothing changes) unless `id` is above every
    /// listed id and inside the vocabulary, which keeps the ids ascending and unique.
    pub fn push(&mut self, id: u32, logit: f32) -> bool {
        let fits = (id as usize) < self.vocab && self.ids.last().is_none_or(|&last| id > last);
        if fits {
            self.ids.push(id);
            self.logits.push(logit);
        }
        fits
    }

    /// Keeps the entries for which `keep(id, logit)` holds, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(u32, f32) -> bool) {
        let len = self.ids.len().min(self.logits.len()); // equal lengths, always
        let mut n = 0;
        for i in 0..len {
            // i < len bounds both; n ≤ i.
            let (id, x) = (self.ids[i], self.logits[i]);
            if keep(id, x) {
                self.ids[n] = id;
                self.logits[n] = x;
                n += 1;
            }
        }
        self.ids.truncate(n);
        self.logits.truncate(n);
    }

    /// Becomes the sparse form of `row`: every entry that is not `−∞`, in id order.
    pub fn gather(&mut self, row: &[f32]) {
        self.clear(row.len());
        for (id, &x) in row.iter().enumerate() {
            // One predictable branch per entry: after a cut nearly all are −∞.
            if x != f32::NEG_INFINITY {
                self.ids.push(id as u32);
                self.logits.push(x);
            }
        }
    }

    /// Writes the listed logits into `row` at their ids (ids beyond `row` are skipped); the other
    /// entries of `row` are left alone.
    pub fn scatter(&self, row: &mut [f32]) {
        for (&id, &x) in self.ids.iter().zip(&self.logits) {
            if let Some(slot) = row.get_mut(id as usize) {
                *slot = x;
            }
        }
    }

    /// `row` becomes the dense row this stands for: `−∞` everywhere but the listed ids.
    pub fn scatter_into(&self, row: &mut Vec<f32>) {
        row.clear();
        row.resize(self.vocab, f32::NEG_INFINITY);
        self.scatter(row);
    }

    /// Runs `f` on the dense row this stands for, then becomes the sparse form of its result: how a
    /// processor without a sparse form of its own runs on candidates.
    pub fn with_dense(&mut self, f: impl FnOnce(&mut [f32])) {
        // Taken out so `gather` can borrow `self` mutably while reading the row.
        let mut row = std::mem::take(&mut self.dense);
        self.scatter_into(&mut row);
        f(&mut row);
        self.gather(&row);
        self.dense = row;
    }
}
