//! What a generation returns: sequences grouped by prompt, and statistics computed in one place.

use std::time::Duration;

use serde::Serialize;

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It generated an end-of-sequence id (kept as its last id).
    Eos,
    /// It reached its token budget (`max_new_tokens`, or `max_length` minus the prompt).
    Length,
    /// Its text came to contain one of `stop_strings`.
    StopString,
    /// The caller stopped it ([`crate::engine::Generation::stop`], or [`Flow::Stop`]).
    Caller,
}

/// Whether a sequence goes on after a token (the answer of a per-token callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep generating.
    Continue,
    /// Stop this sequence (the token just reported is kept).
    Stop,
}

/// One token of one sequence, as it is chosen, and the text it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDelta {
    /// Which sequence: `prompt × num_return_sequences + k`.
    pub sequence: usize,
    /// Which prompt it continues.
    pub prompt: usize,
    /// The new id.
    pub token: u32,
    /// Its log-probability under the model's raw (unprocessed) logits.
    pub logprob: f32,
    /// The text this token completes: empty without a tokenizer, and for a token that ends
    /// inside a UTF-8 character (the character comes whole with a later token). A sequence's last
    /// token also carries whatever an unfinished character left (as U+FFFD).
    pub text: String,
    /// Set on the token that ended its sequence.
    pub stop: Option<StopReason>,
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sequence {
    /// Generated ids only (the prompt excluded); ends with the EOS id when generation stopped on it.
    pub ids: Vec<u32>,
    /// For each generated id, its log-probability under the model's raw (unprocessed) logits.
    pub logprobs: Vec<f32>,
    /// Beam search only: the hypothesis score (sum of processed log-probabilities divided by
    /// generated length^length_penalty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Why it stopped (`None` for a generation dropped or finished early by the caller before
    /// this sequence was done).
    pub stop: Option<StopReason>,
}

/// How a generation went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerationStats {
    /// Tokens generated, all sequences together.
    pub new_tokens: usize,
    /// Time of the prompts' forward pass (which yields the first token of each sequence, except
    /// under speculative decoding, whose first verify pass does).
    pub prefill_seconds: f64,
    /// Time of every later step (forward passes, drafting, verifying, sampling).
    pub decode_seconds: f64,
    /// Decode throughput: tokens made by the steps after the prefill, all rows together (beam
    /// search: one per beam and step), over `decode_seconds`; 0 when there were none.
    pub tokens_per_second: f64,
    /// Forward passes of the target model.
    pub target_forward_calls: usize,
    /// Speculative decoding only: acceptance and cost (flattened into these stats in JSON).
    #[serde(flatten)]
    pub speculative: Option<SpeculativeStats>,
}

/// What speculative decoding did: read `acceptance_rate` and `mean_accepted` first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpeculativeStats {
    /// Tokens proposed by the drafter.
    pub drafted: usize,
    /// Proposed tokens the target kept.
    pub accepted: usize,
    /// `accepted / drafted`.
    pub acceptance_rate: f64,
    /// Drafted tokens kept per verify step (each step also adds one token of the target's).
    pub mean_accepted: f64,
    /// Verify steps (one target forward pass each), all rows together.
    pub verify_steps: usize,
    /// Per draft position `i`: how often a token was proposed there, and how often kept.
    pub per_position: Vec<PositionStats>,
    /// Draft-model forward passes (0 for drafters without a model).
    pub draft_forward_calls: usize,
    /// Seconds in target forward passes.
    pub target_seconds: f64,
    /// Seconds in the drafter.
    pub draft_seconds: f64,
}

/// Acceptance at one draft position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PositionStats {
    /// Tokens proposed at this position.
    pub drafted: usize,
    /// Of those, kept.
    pub accepted: usize,
}

/// The result of generating from one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationOutput {
    /// The prompt, as ids.
    pub prompt_ids: Vec<u32>,
    /// `num_return_sequences` entries (beam search: best first, at most that many).
    pub sequences: Vec<Sequence>,
    /// Timing and counts of the whole call (shared by every prompt of a batch).
    pub stats: GenerationStats,
}

/// The clock of a generation: every step reports here, and the stats are derived in one place.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    prefill: Duration,
    decode: Duration,
    decode_tokens: usize,
    forward_calls: usize,
}

impl Clock {
    /// A step took `elapsed`, ran `forward_calls` target passes and made `tokens` tokens;
    /// `prefill` when it is the step that read the prompts.
    pub(crate) fn record(
        &mut self,
        prefill: bool,
        elapsed: Duration,
        forward_calls: usize,
        tokens: usize,
    ) {
        self.forward_calls += forward_calls;
        if prefill {
            self.prefill += elapsed;
        } else {
            self.decode += elapsed;
            self.decode_tokens += tokens;
        }
    }

    /// The statistics, for `new_tokens` generated in all.
    pub(crate) fn stats(
        &self,
        new_tokens: usize,
        speculative: Option<SpeculativeStats>,
    ) -> GenerationStats {
        let decode_seconds = self.decode.as_secs_f64();
        GenerationStats {
            new_tokens,
            prefill_seconds: self.prefill.as_secs_f64(),
            decode_seconds,
            tokens_per_second: if self.decode_tokens > 0 && decode_seconds > 0.0 {
                self.decode_tokens as f64 / decode_seconds
            } else {
                0.0
            },
            target_forward_calls: self.forward_calls,
            speculative,
        }
    }
}
