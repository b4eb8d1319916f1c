//! The generation engine: one definition of a sequence in flight, its stop conditions, its
//! statistics and the grouping of outputs, shared by plain decoding (greedy or sampling),
//! speculative decoding and beam search, over any [`LanguageModel`].
//!
//! An [`Engine`] holds the settings of a call (the model, a [`GenerationConfig`], and optionally a
//! tokenizer, a drafter, or chains of your own); [`Engine::start`] checks the whole request and
//! returns a [`Generation`], which advances one step (one target forward pass) per
//! [`Generation::step`] call and is an iterator of [`TextDelta`]s: pull tokens at your own pace,
//! stop a sequence with [`Generation::stop`], or drop the generation to cancel it (its cache goes
//! with it). [`Generation::finish`] runs to the end and returns one [`GenerationOutput`] per
//! prompt.
//!
//! ```
//! # use decode_core::{Batch, Cache, GenerationConfig, LanguageModel, Logits, Result};
//! # struct Counter; // a toy model: always prefers the id after the last one
//! # #[derive(Default)] struct Len(usize, Vec<usize>);
//! # impl Cache for Len {
//! #     fn rows(&self) -> usize { self.1.len() }
//! #     fn len(&self) -> usize { self.0 }
//! #     fn positions(&self) -> &[usize] { &self.1 }
//! #     fn truncate(&mut self, len: usize) -> Result<()> { self.0 = len; Ok(()) }
//! #     fn reorder(&mut self, rows: &[usize]) -> Result<()> { self.1 = rows.iter().map(|&r| self.1[r]).collect(); Ok(()) }
//! #     fn rollback(&mut self, _row: usize, _keep: usize) -> Result<()> { Ok(()) }
//! #     fn trim(&mut self) {}
//! # }
//! # impl LanguageModel for Counter {
//! #     type Cache = Len;
//! #     fn vocab_size(&self) -> usize { 8 }
//! #     fn context_length(&self) -> usize { 64 }
//! #     fn eos_token_ids(&self) -> &[u32] { &[7] }
//! #     fn new_cache(&self, rows: usize, _: usize) -> Result<Len> { Ok(Len(0, vec![0; rows])) }
//! #     fn forward(&self, batch: &Batch, cache: &mut Len) -> Result<Logits> {
//! #         cache.0 += batch.steps();
//! #         let mut data = Vec::new();
//! #         for r in 0..batch.rows() { for &t in batch.row(r) {
//! #             data.extend((0..8).map(|i| if i == (t + 1) % 8 { 1.0 } else { 0.0 }));
//! #         } }
//! #         Logits::new(batch.rows(), batch.steps(), 8, data)
//! #     }
//! # }
//! use decode_samplers::engine::Engine;
//!
//! # fn main() -> Result<()> {
//! # let model = Counter;
//! let config = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::default() };
//! // Pull tokens one by one…
//! for delta in Engine::new(&model, &config).start(&[vec![1, 2]])? {
//!     let delta = delta?;
//!     println!("sequence {} got {} (logprob {:.2})", delta.sequence, delta.token, delta.logprob);
//! }
//! // …or run to the end.
//! let outputs = Engine::new(&model, &config).run(&[vec![1, 2]])?;
//! assert_eq!(outputs[0].sequences[0].ids, [3, 4, 5, 6]);
//! # Ok(()) }
//! ```

mod checks;
mod output;
mod plain;
mod request;
pub(crate) mod sequence;

use std::collections::VecDeque;
use std::time::Instant;

use decode_core::{Error, GenerationConfig, LanguageModel, Result, TokenText};

pub use checks::{check_chosen, check_logits, log_softmax_at};
pub use output::{
    Flow, GenerationOutput, GenerationStats, PositionStats, Sequence, SpeculativeStats, StopReason,
    TextDelta,
};
pub use request::{
    FALLBACK_MEMORY_LIMIT, check_memory, check_prompt, check_request, memory_limit, memory_needed,
};

use crate::SamplerChain;
use crate::beam::BeamSearch;
use crate::speculative::{DraftSchedule, Drafter, Speculation};
use output::Clock;
use plain::Plain;
use sequence::{Row, StopRules};

/// What one step did, for the clock.
pub(crate) struct Report {
    /// Whether it was the step that read the prompts.
    pub(crate) prefill: bool,
    /// Target forward passes it ran.
    pub(crate) forward_calls: usize,
    /// Tokens it made, all rows together.
    pub(crate) tokens: usize,
}

/// The settings of one generation call; [`Engine::start`] checks them and begins.
pub struct Engine<'m, M: LanguageModel> {
    model: &'m M,
    config: GenerationConfig,
    text: Option<&'m dyn TokenText>,
    drafter: Option<(Box<dyn Drafter + 'm>, DraftSchedule)>,
    chains: Option<Box<dyn FnMut(usize) -> SamplerChain + 'm>>,
    memory_limit: Option<u64>,
}

impl<'m, M: LanguageModel> Engine<'m, M> {
    /// Generates with `model` as `config` says: greedy, sampling (`do_sample`) or beam search
    /// (`num_beams > 1`), each sequence with the [`SamplerChain`] the config describes.
    pub fn new(model: &'m M, config: &GenerationConfig) -> Self {
        Engine {
            model,
            config: config.clone(),
            text: None,
            drafter: None,
            chains: None,
            memory_limit: None,
        }
    }

    /// Caps the memory a request may need at `bytes` (see [`memory_limit`]: by default, what the
    /// system says this process may still allocate). A request whose estimate
    /// ([`memory_needed`]) passes it is refused before anything is allocated.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Decodes each token's text as it is chosen ([`TextDelta::text`]), which `stop_strings`
    /// need. The tokenizer is checked against the model when the generation starts.
    pub fn text(mut self, tokenizer: &'m dyn TokenText) -> Self {
        self.text = Some(tokenizer);
        self
    }

    /// Speculative decoding: `drafter` proposes, the model verifies (the same output
    /// distribution; the stats gain [`GenerationStats::speculative`]). Pass a drafter by value, or
    /// `&mut drafter` to read its state afterwards.
    pub fn speculative(mut self, drafter: impl Drafter + 'm, schedule: DraftSchedule) -> Self {
        self.drafter = Some((Box::new(drafter), schedule));
        self
    }

    /// Sequence `i` (`prompt × num_return_sequences + k`) samples with `make_chain(i)` instead of
    /// the chain the config describes: the config's processor and sampling fields (penalties,
    /// temperature, top-k…, `do_sample`, `seed`) are then not used, every other field is. Beam
    /// search uses the processors of each prompt's first chain.
    pub fn chains(mut self, make_chain: impl FnMut(usize) -> SamplerChain + 'm) -> Self {
        self.chains = Some(Box::new(make_chain));
        self
    }

    /// Checks the whole request (settings, prompts, token ids, memory, tokenizer, drafter) before
    /// anything is allocated or run, and returns the generation, ready to step.
    pub fn start(self, prompts: &[Vec<u32>]) -> Result<Generation<'m, M>> {
        let Engine {
            model,
            config,
            text,
            drafter,
            mut chains,
            memory_limit: cap,
        } = self;
        let eos = check_request(model, prompts, &config)?;
        check_memory(
            model,
            prompts,
            &config,
            drafter.is_some(),
            memory_limit(cap),
        )?;
        let rules = StopRules::new(&config, &eos);
        match text {
            Some(text) => text.check_against(model.vocab_size())?,
            None if rules.has_stop_strings() => {
                return Err(Error::invalid(
                    "stop_strings",
                    "stop strings need a tokenizer to read the text (Engine::text)",
                ));
            }
            None => {}
        }
        let pad = eos.first().copied().unwrap_or(0);
        let copies = config.num_return_sequences;
        let mut rows = Vec::with_capacity(prompts.len() * copies);
        for (p, prompt) in prompts.iter().enumerate() {
            for _ in 0..copies {
                let i = rows.len();
                let chain = match &mut chains {
                    Some(make) => make(i),
                    None => SamplerChain::from_config(&config, &eos, i)?,
                };
                let budget = config.new_tokens_for(prompt.len());
                rows.push(Row::new(p, prompt, budget, chain, text));
            }
        }
        let strategy = match (BeamSearch::from_config(&config), drafter) {
            (Some(_), Some(_)) => {
                return Err(Error::Unsupported(
                    "beam search with a drafter (speculative decoding is for greedy decoding and \
                     sampling)"
                        .into(),
                ));
            }
            (Some(_), None) if rules.has_stop_strings() => {
                return Err(Error::Unsupported("stop strings with beam search".into()));
            }
            (Some(beam), None) => Strategy::Beam(Box::new(beam)),
            (None, Some((drafter, schedule))) => {
                let speculation = Speculation::new(model, drafter, schedule, rows.len(), pad)?;
                Strategy::Speculative(Box::new(speculation))
            }
            (None, None) => Strategy::Plain(Plain::new(pad)),
        };
        Ok(Generation {
            model,
            prompts: prompts.to_vec(),
            rows,
            rules,
            strategy,
            clock: Clock::default(),
            pending: VecDeque::new(),
            failed: false,
        })
    }

    /// [`Engine::start`], then [`Generation::finish`]: one output per prompt.
    pub fn run(self, prompts: &[Vec<u32>]) -> Result<Vec<GenerationOutput>> {
        self.start(prompts)?.finish()
    }
}

/// How the sequences advance.
enum Strategy<'m, M: LanguageModel> {
    Plain(Plain<M::Cache>),
    Speculative(Box<Speculation<'m, M::Cache>>),
    Beam(Box<BeamSearch<M::Cache>>),
}

/// A generation in progress: sequences in flight, their caches and statistics.
///
/// Each [`Generation::step`] runs one target forward pass (plus the drafting under speculative
/// decoding) and reports the tokens it kept; as an [`Iterator`] it yields them one at a time,
/// stepping when it runs out. Beam search reports each prompt's sequences when its search ends
/// (beams change until then). After an error the generation is over.
pub struct Generation<'m, M: LanguageModel> {
    model: &'m M,
    prompts: Vec<Vec<u32>>,
    rows: Vec<Row<'m>>,
    rules: StopRules,
    strategy: Strategy<'m, M>,
    clock: Clock,
    /// Tokens stepped but not yet pulled through the iterator.
    pending: VecDeque<TextDelta>,
    failed: bool,
}

impl<M: LanguageModel> Generation<'_, M> {
    /// Whether every sequence has stopped (or a step failed).
    pub fn is_done(&self) -> bool {
        self.failed
            || match &self.strategy {
                Strategy::Beam(beam) => beam.is_done(),
                _ => self.rows.iter().all(Row::is_done),
            }
    }

    /// Runs one step and calls `on_token` with every token it keeps, in order; [`Flow::Stop`]
    /// stops that token's sequence (the token is kept). Does nothing once [`Generation::is_done`].
    pub fn step_with(&mut self, mut on_token: impl FnMut(&TextDelta) -> Flow) -> Result<()> {
        if self.is_done() {
            return Ok(());
        }
        let started = Instant::now();
        let mut report = |delta: TextDelta| on_token(&delta) == Flow::Continue;
        let (model, rows, rules) = (self.model, &mut self.rows, &self.rules);
        let result = match &mut self.strategy {
            Strategy::Plain(plain) => plain.step(model, rows, rules, &mut report),
            Strategy::Speculative(spec) => spec.step(model, rows, rules, &mut report),
            Strategy::Beam(beam) => beam.step(model, rows, rules, &mut report),
        };
        match result {
            Ok(step) => {
                let elapsed = started.elapsed();
                self.clock
                    .record(step.prefill, elapsed, step.forward_calls, step.tokens);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Runs one step and returns the tokens it kept (none once [`Generation::is_done`]; the
    /// prefill of speculative decoding and most steps of beam search keep none).
    pub fn step(&mut self) -> Result<Vec<TextDelta>> {
        let mut kept = Vec::new();
        self.step_with(|delta| {
            kept.push(delta.clone());
            Flow::Continue
        })?;
        Ok(kept)
    }

    /// Stops sequence `sequence` (the caller's stop condition); later steps leave it alone. Beam
    /// search has no sequence to stop until its end: drop the generation to cancel it.
    pub fn stop(&mut self, sequence: usize) {
        if !matches!(self.strategy, Strategy::Beam(_))
            && let Some(row) = self.rows.get_mut(sequence)
        {
            row.stop_by_caller();
        }
    }

    /// The ids sequence `sequence` has generated so far.
    pub fn generated(&self, sequence: usize) -> Option<&[u32]> {
        self.rows.get(sequence).map(Row::generated)
    }

    /// The statistics so far.
    pub fn stats(&self) -> GenerationStats {
        let new_tokens = self.rows.iter().map(Row::step).sum();
        let speculative = match &self.strategy {
            Strategy::Speculative(spec) => Some(spec.stats()),
            _ => None,
        };
        self.clock.stats(new_tokens, speculative)
    }

    /// Steps until every sequence has stopped, then returns one output per prompt.
    pub fn finish(self) -> Result<Vec<GenerationOutput>> {
        self.run(|_| Flow::Continue)
    }

    /// Like [`Generation::finish`], calling `on_token` with every token as it is kept (it may stop
    /// its sequence).
    pub fn run(
        mut self,
        mut on_token: impl FnMut(&TextDelta) -> Flow,
    ) -> Result<Vec<GenerationOutput>> {
        while !self.is_done() {
            self.step_with(&mut on_token)?;
        }
        let stats = self.stats();
        let mut outputs: Vec<GenerationOutput> = self
            .prompts
            .iter()
            .map(|p| GenerationOutput {
                prompt_ids: p.clone(),
                sequences: Vec::new(),
                stats: stats.clone(),
            })
            .collect();
        for row in self.rows {
            if let Some(output) = outputs.get_mut(row.prompt) {
                output.sequences.push(row.into_sequence());
            }
        }
        Ok(outputs)
    }
}

impl<M: LanguageModel> Iterator for Generation<'_, M> {
    type Item = Result<TextDelta>;

    /// The next kept token, stepping as needed; `None` once every sequence has stopped.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(delta) = self.pending.pop_front() {
                return Some(Ok(delta));
            }
            if self.is_done() {
                return None;
            }
            let mut kept = std::mem::take(&mut self.pending);
            let result = self.step_with(|delta| {
                kept.push_back(delta.clone());
                Flow::Continue
            });
            self.pending = kept;
            if let Err(e) = result {
                return Some(Err(e));
            }
        }
    }
}
