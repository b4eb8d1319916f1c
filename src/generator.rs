//! [`Generator`]: a model, its tokenizer and its settings in one object, with text in and text
//! out: [`Generator::generate`] returns the whole [`Output`], [`Generator::stream`] yields
//! [`TextDelta`]s as they are generated.

use std::path::Path;

use decode_core::{Error, GenerationConfig, LanguageModel, Result};
use decode_models::backend::{Backend, Cpu, cpu_device};
use decode_models::gpt2::LoadOptions;
use decode_models::{Gpt2, Tokenizer};
use decode_samplers::engine::{Engine, Generation, GenerationStats, StopReason, TextDelta};
use decode_samplers::speculative::{DraftModel, DraftSchedule, PromptLookup};
use serde::Serialize;

/// What proposes tokens under speculative decoding.
enum Drafting<M> {
    /// A smaller model of the same vocabulary.
    Model(M),
    /// Prompt lookup with n-grams of at most this many tokens.
    PromptLookup(usize),
}

/// A model, its tokenizer and its generation settings, ready to generate text.
///
/// ```no_run
/// use decode::Generator;
///
/// # fn main() -> decode::Result<()> {
/// let generator = Generator::from_dir("path/to/gpt2")?; // config.json, model.safetensors, tokenizer
/// println!("{}", generator.generate("Hello, I'm a language model,")?.text());
/// # Ok(()) }
/// ```
///
/// Every call takes `&self`: one generator serves many calls, and several [`Stream`]s can run
/// side by side. The settings are a [`GenerationConfig`] (the model directory's
/// `generation_config.json` when it has one), used whole: greedy, sampling (`do_sample`) or beam
/// search (`num_beams > 1`), penalties, stop strings, several sequences per prompt. With
/// [`Generator::with_draft`] or [`Generator::with_prompt_lookup`] it decodes speculatively (the
/// same output distribution, fewer passes of the model).
pub struct Generator<M: LanguageModel = Gpt2<Cpu>> {
    model: M,
    tokenizer: Option<Tokenizer>,
    config: GenerationConfig,
    drafting: Option<Drafting<M>>,
    schedule: DraftSchedule,
}

impl Generator<Gpt2<Cpu>> {
    /// GPT-2 on the CPU from a HuggingFace model directory (`config.json`, `model.safetensors`,
    /// and `tokenizer.json` or `vocab.json` + `merges.txt`; its `generation_config.json` when it
    /// has one) or from a GGUF file written by llama.cpp (tokenizer from its metadata).
    pub fn from_dir(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path, &cpu_device())
    }

    /// Like [`Generator::from_dir`], the model built as `options` say (for instance quantized to
    /// q8_0 at load: `LoadOptions::default().quantize(Quantization::Q8_0)`).
    pub fn from_dir_with(path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        Self::load_with(path, &cpu_device(), options)
    }
}

impl<B: Backend> Generator<Gpt2<B>> {
    /// Like [`Generator::from_dir`], on `device` of the backend `B` (a GPU, for instance).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with(path, device, LoadOptions::default())
    }

    /// Like [`Generator::load`], the model built as `options` say (for instance quantized to
    /// q8_0 at load: `LoadOptions::default().quantize(Quantization::Q8_0)`).
    pub fn load_with(
        path: impl AsRef<Path>,
        device: &B::Device,
        options: LoadOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        let model = Gpt2::<B>::load_with(path, device, options)?;
        let tokenizer = Tokenizer::for_model(path)?;
        Generator::new(model, Some(tokenizer))?.with_config(GenerationConfig::for_model_dir(path)?)
    }
}

impl<M: LanguageModel> Generator<M> {
    /// A generator from parts, with the default settings. Without a tokenizer it works on ids
    /// only ([`Generator::generate_ids`]). A tokenizer that does not fit the model (another
    /// vocabulary, not byte-level, gaps in its ids) is refused here.
    pub fn new(model: M, tokenizer: Option<Tokenizer>) -> Result<Self> {
        if let Some(tokenizer) = &tokenizer {
            tokenizer.check_against(model.vocab_size())?;
        }
        Ok(Generator {
            model,
            tokenizer,
            config: GenerationConfig::default(),
            drafting: None,
            schedule: DraftSchedule::default(),
        })
    }

    /// Replaces the settings (checked now; what needs a prompt is checked per call).
    pub fn with_config(mut self, config: GenerationConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Decodes speculatively with `draft`, a smaller model of the same vocabulary (its sampling
    /// draws seeded with the config's `seed` + `0x5eed`).
    pub fn with_draft(mut self, draft: M) -> Result<Self> {
        if draft.vocab_size() != self.model.vocab_size() {
            return Err(Error::VocabMismatch(format!(
                "the draft has {} tokens but the target has {}",
                draft.vocab_size(),
                self.model.vocab_size()
            )));
        }
        self.drafting = Some(Drafting::Model(draft));
        Ok(self)
    }

    /// Decodes speculatively with prompt lookup: drafts are what followed the last n-gram (of at
    /// most `max_ngram` tokens) where it occurred earlier in the text. No draft model.
    pub fn with_prompt_lookup(mut self, max_ngram: usize) -> Result<Self> {
        if max_ngram == 0 {
            return Err(Error::invalid("max_ngram", "must be at least 1"));
        }
        self.drafting = Some(Drafting::PromptLookup(max_ngram));
        Ok(self)
    }

    /// How many tokens to draft per verify step (default: 4, fixed).
    pub fn with_schedule(mut self, schedule: DraftSchedule) -> Result<Self> {
        schedule.validate()?;
        self.schedule = schedule;
        Ok(self)
    }

    /// The settings.
    pub fn config(&self) -> &GenerationConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The tokenizer, when there is one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// Generates from `prompt`: the whole output, when generation ends.
    pub fn generate(&self, prompt: &str) -> Result<Output> {
        let ids = self.encode(prompt)?;
        self.finish(self.engine().start(&[ids])?).map(first)?
    }

    /// Generates from a prompt given as token ids.
    pub fn generate_ids(&self, prompt: &[u32]) -> Result<Output> {
        self.finish(self.engine().start(&[prompt.to_vec()])?)
            .map(first)?
    }

    /// Generates from several prompts at once (one forward pass per step for all of them,
    /// left-padded; the outputs equal the prompts run one by one): one output per prompt.
    pub fn generate_batch(&self, prompts: &[&str]) -> Result<Vec<Output>> {
        let ids = prompts
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>>>()?;
        self.generate_batch_ids(&ids)
    }

    /// [`Generator::generate_batch`] from token ids.
    pub fn generate_batch_ids(&self, prompts: &[Vec<u32>]) -> Result<Vec<Output>> {
        self.finish(self.engine().start(prompts)?)
    }

    /// Generates from `prompt` as the stream is pulled: each item is one token of one sequence
    /// and the text it completes. Dropping the stream stops generating and frees the cache;
    /// [`Stream::finish`] gives the outputs. Beam search yields its sequences when it ends.
    pub fn stream(&self, prompt: &str) -> Result<Stream<'_, M>> {
        let ids = self.encode(prompt)?;
        self.stream_batch_ids(&[ids])
    }

    /// [`Generator::stream`] from token ids.
    pub fn stream_ids(&self, prompt: &[u32]) -> Result<Stream<'_, M>> {
        self.stream_batch_ids(&[prompt.to_vec()])
    }

    /// [`Generator::stream`] for several prompts: [`TextDelta::prompt`] and
    /// [`TextDelta::sequence`] say which sequence each token continues.
    pub fn stream_batch(&self, prompts: &[&str]) -> Result<Stream<'_, M>> {
        let ids = prompts
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>>>()?;
        self.stream_batch_ids(&ids)
    }

    /// [`Generator::stream_batch`] from token ids.
    pub fn stream_batch_ids(&self, prompts: &[Vec<u32>]) -> Result<Stream<'_, M>> {
        Ok(Stream {
            generator: self,
            generation: self.engine().start(prompts)?,
        })
    }

    /// The engine this generator drives, configured alike (model, settings, tokenizer, drafter):
    /// for stepping a [`Generation`] yourself, or adding chains of your own
    /// ([`Engine::chains`]).
    pub fn engine(&self) -> Engine<'_, M> {
        let mut engine = Engine::new(&self.model, &self.config);
        if let Some(tokenizer) = &self.tokenizer {
            engine = engine.text(tokenizer);
        }
        match &self.drafting {
            Some(Drafting::Model(draft)) => {
                let seed = self.config.seed.wrapping_add(0x5eed);
                engine.speculative(DraftModel::new(draft, seed), self.schedule)
            }
            Some(Drafting::PromptLookup(n)) => {
                engine.speculative(PromptLookup::new(*n), self.schedule)
            }
            None => engine,
        }
    }

    fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        match &self.tokenizer {
            Some(tokenizer) => tokenizer.encode(prompt),
            None => Err(Error::invalid(
                "prompt",
                "this generator has no tokenizer: give the prompt as ids (generate_ids)",
            )),
        }
    }

    fn finish(&self, generation: Generation<'_, M>) -> Result<Vec<Output>> {
        generation
            .finish()?
            .into_iter()
            .map(|out| self.output(out))
            .collect()
    }

    /// An engine output with each sequence's text.
    fn output(&self, out: decode_samplers::GenerationOutput) -> Result<Output> {
        let sequences = out
            .sequences
            .into_iter()
            .map(|s| {
                let text = match &self.tokenizer {
                    Some(t) => t.decode(&s.ids)?,
                    None => String::new(),
                };
                Ok(Completion {
                    text,
                    ids: s.ids,
                    logprobs: s.logprobs,
                    score: s.score,
                    stop: s.stop,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Output {
            prompt_ids: out.prompt_ids,
            sequences,
            stats: out.stats,
        })
    }
}

fn first(mut outputs: Vec<Output>) -> Result<Output> {
    outputs
        .pop()
        .ok_or_else(|| Error::Shape("generation returned no output".into()))
}

/// The result of generating from one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// The prompt, as ids.
    pub prompt_ids: Vec<u32>,
    /// `num_return_sequences` completions (beam search: best first).
    pub sequences: Vec<Completion>,
    /// Timing and counts of the whole call (shared by every prompt of a batch).
    pub stats: GenerationStats,
}

impl Output {
    /// The text of the first (under beam search, the best) sequence; empty without a tokenizer.
    pub fn text(&self) -> &str {
        self.sequences.first().map_or("", |s| s.text.as_str())
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// The generated text (the prompt excluded); empty without a tokenizer.
    pub text: String,
    /// The generated ids; ends with the EOS id when generation stopped on it.
    pub ids: Vec<u32>,
    /// For each id, its log-probability under the model's raw (unprocessed) logits.
    pub logprobs: Vec<f32>,
    /// Beam search only: the hypothesis score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Why it stopped.
    pub stop: Option<StopReason>,
}

/// Tokens as they are generated: an iterator of [`TextDelta`]s that steps the model when pulled.
/// Dropping it stops generating and frees the cache.
pub struct Stream<'g, M: LanguageModel> {
    generator: &'g Generator<M>,
    generation: Generation<'g, M>,
}

impl<M: LanguageModel> Stream<'_, M> {
    /// Stops sequence `sequence`; the others go on.
    pub fn stop(&mut self, sequence: usize) {
        self.generation.stop(sequence);
    }

    /// The statistics so far.
    pub fn stats(&self) -> GenerationStats {
        self.generation.stats()
    }

    /// Generates what is left without reporting it, then returns one output per prompt.
    pub fn finish(self) -> Result<Vec<Output>> {
        self.generator.finish(self.generation)
    }
}

impl<M: LanguageModel> Iterator for Stream<'_, M> {
    type Item = Result<TextDelta>;

    fn next(&mut self) -> Option<Self::Item> {
        self.generation.next()
    }
}
