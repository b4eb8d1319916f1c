//! One sequence in flight, and the stop conditions every strategy applies to it.

use decode_core::{GenerationConfig, LogitsProcessor, Result, StreamDecoder, TokenText};

use super::output::{Sequence, StopReason, TextDelta};
use crate::SamplerChain;

/// When a sequence stops, from the settings: read here only.
#[derive(Debug, Clone)]
pub(crate) struct StopRules {
    /// End-of-sequence ids that stop a sequence (none with `ignore_eos`).
    pub(crate) eos: Vec<u32>,
    stop_strings: Vec<String>,
    /// The longest stop string, in bytes: how far back a new token's text can complete one.
    longest: usize,
}

impl StopRules {
    /// `eos` are the request's end-of-sequence ids (the config's, else the model's).
    pub(crate) fn new(config: &GenerationConfig, eos: &[u32]) -> Self {
        StopRules {
            eos: if config.ignore_eos {
                Vec::new()
            } else {
                eos.to_vec()
            },
            longest: config
                .stop_strings
                .iter()
                .map(String::len)
                .max()
                .unwrap_or(0),
            stop_strings: config.stop_strings.clone(),
        }
    }

    /// Whether there are stop strings (they need a tokenizer).
    pub(crate) fn has_stop_strings(&self) -> bool {
        !self.stop_strings.is_empty()
    }

    /// Whether `text`, which just grew by `added` bytes, now contains a stop string. Only the tail
    /// a new match can lie in is searched, so a long text costs no more than a short one.
    fn stops_text(&self, text: &str, added: usize) -> bool {
        if self.stop_strings.is_empty() || added == 0 {
            return false;
        }
        let from = text.floor_char_boundary(text.len().saturating_sub(added + self.longest));
        let tail = &text[from..];
        self.stop_strings.iter().any(|s| tail.contains(s.as_str()))
    }
}

/// The text of a sequence so far, decoded as its tokens arrive.
struct Text<'t> {
    decoder: StreamDecoder<'t>,
    text: String,
}

/// One sequence in flight: its tokens, log-probabilities, budget, sampler chain and text.
pub(crate) struct Row<'t> {
    /// The prompt it continues.
    pub(crate) prompt: usize,
    /// The prompt followed by every token kept so far.
    pub(crate) tokens: Vec<u32>,
    pub(crate) prompt_len: usize,
    pub(crate) logprobs: Vec<f32>,
    /// Tokens it may generate.
    pub(crate) budget: usize,
    pub(crate) stop: Option<StopReason>,
    pub(crate) chain: SamplerChain,
    /// Beam search only: the hypothesis score.
    pub(crate) score: Option<f32>,
    text: Option<Text<'t>>,
}

/// Cache slots a batch of `rows` needs at most: every row left-padded to the longest prompt,
/// then one slot a step for as many steps as the longest budget (a row's last token is never fed).
pub(crate) fn slots_needed(rows: &[Row<'_>]) -> usize {
    let longest = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
    let budget = rows.iter().map(|r| r.budget).max().unwrap_or(0);
    longest.saturating_add(budget).max(1)
}

impl<'t> Row<'t> {
    pub(crate) fn new(
        prompt: usize,
        tokens: &[u32],
        budget: usize,
        chain: SamplerChain,
        text: Option<&'t dyn TokenText>,
    ) -> Self {
        Row {
            prompt,
            tokens: tokens.to_vec(),
            prompt_len: tokens.len(),
            logprobs: Vec::new(),
            budget,
            stop: (budget == 0).then_some(StopReason::Length),
            chain,
            score: None,
            text: text.map(|t| Text {
                decoder: StreamDecoder::new(t),
                text: String::new(),
            }),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.stop.is_some()
    }

    /// The generated ids.
    pub(crate) fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Tokens generated so far.
    pub(crate) fn step(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// The last token (the one the model has not read yet).
    pub(crate) fn last(&self) -> u32 {
        self.tokens.last().copied().unwrap_or(0)
    }

    /// Keeps a chosen token: the chain accepts it, its text is decoded, and every stop condition
    /// is applied here (EOS, length, stop strings, then the caller's `on_token`). Returns whether
    /// the sequence goes on.
    pub(crate) fn push(
        &mut self,
        sequence: usize,
        token: u32,
        logprob: f32,
        rules: &StopRules,
        on_token: &mut dyn FnMut(TextDelta) -> bool,
    ) -> Result<bool> {
        LogitsProcessor::accept(&mut self.chain, token);
        self.tokens.push(token);
        self.logprobs.push(logprob);
        let mut piece = String::new();
        let mut stop_string = false;
        if let Some(t) = &mut self.text {
            piece = t.decoder.push(token)?;
            t.text.push_str(&piece);
            stop_string = rules.stops_text(&t.text, piece.len());
        }
        let stop = if rules.eos.contains(&token) {
            Some(StopReason::Eos)
        } else if stop_string {
            Some(StopReason::StopString)
        } else if self.step() >= self.budget {
            Some(StopReason::Length)
        } else {
            None
        };
        if stop.is_some()
            && let Some(t) = &mut self.text
        {
            // Whatever an unfinished character left: no later token will complete it.
            let rest = t.decoder.finish();
            t.text.push_str(&rest);
            piece.push_str(&rest);
        }
        self.stop = stop;
        let delta = TextDelta {
            sequence,
            prompt: self.prompt,
            token,
            logprob,
            text: piece,
            stop,
        };
        if !on_token(delta) && self.stop.is_none() {
            self.stop = Some(StopReason::Caller);
        }
        Ok(self.stop.is_none())
    }

    /// Stops the sequence for the caller (a no-op once it has stopped).
    pub(crate) fn stop_by_caller(&mut self) {
        self.stop.get_or_insert(StopReason::Caller);
    }

    /// The finished sequence.
    pub(crate) fn into_sequence(self) -> Sequence {
        Sequence {
            ids: self.tokens[self.prompt_len..].to_vec(),
            logprobs: self.logprobs,
            score: self.score,
            stop: self.stop,
        }
    }
}
