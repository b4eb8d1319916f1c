//! [`GenerationConfig`]: how long to generate, when to stop, and how to pick tokens.
//!
//! Field names and defaults are transformers' `GenerationConfig`, so a model's
//! `generation_config.json` reads directly ([`GenerationConfig::from_file`]); fields transformers
//! lacks (OpenAI's penalties, `seed`, `ignore_eos`) are extra.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// transformers' `early_stopping` for beam search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EarlyStopping {
    /// `true` stops as soon as `num_beams` hypotheses are finished; `false` (the default) stops
    /// when no running beam can beat the finished ones under the heuristic of transformers.
    Flag(bool),
    /// `"never"`: the canonical beam search, which only stops when no better candidate can exist.
    #[serde(with = "never")]
    Never,
}

mod never {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("never")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let text = String::deserialize(d)?;
        if text == "never" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "early_stopping must be true, false or \"never\", not \"{text}\""
            )))
        }
    }
}

/// Everything that shapes one generation call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Tokens to generate, prompt excluded. Takes precedence over `max_length`.
    pub max_new_tokens: Option<usize>,
    /// Total length, prompt included (transformers' default: 20).
    pub max_length: usize,
    /// End-of-sequence ids stay masked until this many tokens are generated.
    pub min_new_tokens: usize,
    /// End-of-sequence ids; `None` uses the model's.
    #[serde(rename = "eos_token_id", deserialize_with = "one_or_many")]
    pub eos_token_ids: Option<Vec<u32>>,
    /// Keep going after an end-of-sequence id.
    pub ignore_eos: bool,
    /// Stop once the generated text ends with one of these (needs a tokenizer: see `decode`'s
    /// text generation).
    pub stop_strings: Vec<String>,
    /// Sample instead of taking the most likely token (or beam search with `num_beams > 1`).
    pub do_sample: bool,
    /// Seed of the sampling generator; sequence `i` of a call uses `seed + i`.
    pub seed: u64,
    /// Sequences returned per prompt (for beam search: the best ones, at most `num_beams`).
    pub num_return_sequences: usize,
    /// Divides the logits (sampling only; 1 disables).
    pub temperature: f64,
    /// Keeps the k most likely tokens (sampling only; 0 disables; transformers' default 50).
    pub top_k: usize,
    /// Nucleus: keeps the most likely tokens up to this mass (sampling only; 1 disables).
    pub top_p: f64,
    /// Removes tokens below `min_p` × the top probability (sampling only).
    pub min_p: Option<f64>,
    /// Locally typical sampling mass (sampling only; 1 disables).
    pub typical_p: f64,
    /// Tokens kept by top-k, top-p, min-p and typical-p whatever their thresholds.
    pub min_tokens_to_keep: usize,
    /// transformers' repetition penalty (1 disables).
    pub repetition_penalty: f64,
    /// OpenAI's frequency penalty over generated tokens (0 disables).
    pub frequency_penalty: f64,
    /// OpenAI's presence penalty over generated tokens (0 disables).
    pub presence_penalty: f64,
    /// Forbids repeating any n-gram of this size (0 disables).
    pub no_repeat_ngram_size: usize,
    /// Ids never generated.
    pub banned_tokens: Vec<u32>,
    /// transformers' `bad_words_ids`: token sequences never generated. The last token of each is
    /// banned wherever the context ends with the rest (a one-token entry is banned always);
    /// entries that are just an EOS id are dropped, as transformers does.
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Added to the logits of the listed ids.
    pub logit_bias: BTreeMap<u32, f32>,
    /// Beams for beam search (1: no beam search).
    pub num_beams: usize,
    /// Beam scores are divided by `length ** length_penalty`.
    pub length_penalty: f64,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: None,
            max_length: 20,
            min_new_tokens: 0,
            eos_token_ids: None,
            ignore_eos: false,
            stop_strings: Vec::new(),
            do_sample: false,
            seed: 0,
            num_return_sequences: 1,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            min_p: None,
            typical_p: 1.0,
            min_tokens_to_keep: 1,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            no_repeat_ngram_size: 0,
            banned_tokens: Vec::new(),
            bad_words_ids: Vec::new(),
            logit_bias: BTreeMap::new(),
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Flag(false),
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(id) => vec![id],
        OneOrMany::Many(ids) => ids,
    }))
}

impl GenerationConfig {
    /// Reads a `generation_config.json` (unknown fields are ignored). It is not validated here:
    /// settings applied on top of it (a caller's fields, the CLI's flags) may override a value,
    /// so [`GenerationConfig::validate`] runs on the merged settings, before generating.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::files::read_capped(path, crate::files::CONFIG_MAX_BYTES)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        // serde would read a JSON array as the struct's fields in order; transformers refuses it.
        if !value.is_object() {
            return Err(Error::format(path, "must be a JSON object"));
        }
        serde_json::from_value(value)
            .map_err(|e| Error::format(path, format!("not a valid generation config: {e}")))
    }

    /// The model directory's `generation_config.json` if it has one, else the defaults. One that is
    /// there but is not a regular file (a FIFO, a directory, a broken link) is an error, not skipped.
    pub fn for_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("generation_config.json");
        if crate::files::is_present(&path) {
            Self::from_file(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Tokens to generate after a prompt of `prompt_len`.
    pub fn new_tokens_for(&self, prompt_len: usize) -> usize {
        self.max_new_tokens
            .unwrap_or_else(|| self.max_length.saturating_sub(prompt_len))
    }

    /// Checks every parameter this configuration will use, with transformers' rules: the
    /// sampling parameters (temperature, top-p, min-p, typical-p) only when `do_sample`, as
    /// transformers ignores them under greedy decoding and beam search. The error names the
    /// field as this struct spells it. Checks that need the model or the prompt (EOS ids in the
    /// vocabulary, `max_length` against the prompt, memory) are in
    /// the generation engine (`decode_samplers::engine`).
    pub fn validate(&self) -> Result<()> {
        if self.do_sample {
            positive_f32("temperature", self.temperature)?;
            unit("top_p", self.top_p, false)?;
            unit("typical_p", self.typical_p, false)?;
            if let Some(min_p) = self.min_p {
                unit("min_p", min_p, true)?;
            }
        }
        positive_f32("repetition_penalty", self.repetition_penalty)?;
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(Error::invalid(name, format!("must be in [-2, 2], not {v}")));
            }
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::invalid("length_penalty", "must be a finite number"));
        }
        if self.num_beams == 0 {
            return Err(Error::invalid("num_beams", "must be at least 1"));
        }
        if self.num_return_sequences == 0 {
            return Err(Error::invalid("num_return_sequences", "must be at least 1"));
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return Err(Error::invalid(
                "num_return_sequences",
                format!(
                    "must not exceed num-beams ({}) in beam search, not {}",
                    self.num_beams, self.num_return_sequences
                ),
            ));
        }
        if self.num_beams > 1 && self.do_sample {
            return Err(Error::Unsupported(
                "beam sampling (num_beams > 1 with do_sample, transformers' beam-sample mode); \
                 use beam search or sampling"
                    .into(),
            ));
        }
        if self.min_tokens_to_keep == 0 {
            return Err(Error::invalid("min_tokens_to_keep", "must be at least 1"));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(Error::invalid(
                "stop_strings",
                "an empty stop string would stop every sequence at once",
            ));
        }
        if self.bad_words_ids.iter().any(Vec::is_empty) {
            return Err(Error::invalid("bad_words_ids", "holds an empty sequence"));
        }
        finite_logit_bias(&self.logit_bias)
    }

    /// Every token id the settings name (EOS ids, banned tokens, bad words, logit biases), for
    /// checking against a model's vocabulary.
    pub fn token_ids(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        let eos = self
            .eos_token_ids
            .iter()
            .flatten()
            .map(|&t| ("eos_token_id", t));
        let banned = self.banned_tokens.iter().map(|&t| ("banned_tokens", t));
        let bad = self
            .bad_words_ids
            .iter()
            .flatten()
            .map(|&t| ("bad_words_ids", t));
        let bias = self.logit_bias.keys().map(|&t| ("logit_bias", t));
        eos.chain(banned).chain(bad).chain(bias)
    }
}

/// Refuses `v` unless it is a positive number that stays positive and normal as the f32 the
/// processors apply it as (a temperature of 1e-300 is 0 in f32 and would divide the logits into
/// ±∞); the error names `name`. Shared by [`GenerationConfig::validate`] and the processors'
/// constructors.
pub fn positive_f32(name: &'static str, v: f64) -> Result<()> {
    let f = v as f32;
    if v.is_finite() && v > 0.0 && f.is_normal() {
        Ok(())
    } else {
        Err(Error::invalid(
            name,
            format!("must be a positive number that f32 holds (1.2e-38 to 3.4e38), not {v}"),
        ))
    }
}

/// Refuses a logit bias that is not a finite number (it would make a logit ±∞ or NaN). Shared by
/// [`GenerationConfig::validate`] and the `LogitBias` processor's constructor.
pub fn finite_logit_bias(bias: &BTreeMap<u32, f32>) -> Result<()> {
    match bias.iter().find(|(_, b)| !b.is_finite()) {
        Some((t, b)) => Err(Error::invalid(
            "logit_bias",
            format!("the bias of token {t} must be a finite number, not {b}"),
        )),
        None => Ok(()),
    }
}

/// A probability mass in (0, 1], or [0, 1] with `zero_ok`.
fn unit(name: &'static str, v: f64, zero_ok: bool) -> Result<()> {
    let ok = if zero_ok {
        (0.0..=1.0).contains(&v)
    } else {
        v > 0.0 && v <= 1.0
    };
    if ok {
        Ok(())
    } else {
        let range = if zero_ok { "[0, 1]" } else { "(0, 1]" };
        Err(Error::invalid(name, format!("must be in {range}, not {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_generation_config() {
        let c: GenerationConfig = serde_json::from_str(
            r#"{"_from_model_config": true, "bos_token_id": 50256, "eos_token_id": 50256,
                "transformers_version": "4.46.3", "early_stopping": "never", "top_k": 0}"#,
        )
        .unwrap();
        assert_eq!(c.eos_token_ids, Some(vec![50256]));
        assert_eq!(c.early_stopping, EarlyStopping::Never);
        assert_eq!(c.top_k, 0);
        assert_eq!(c.max_length, 20);
        let c: GenerationConfig = serde_json::from_str(r#"{"early_stopping": true}"#).unwrap();
        assert_eq!(c.early_stopping, EarlyStopping::Flag(true));
        assert!(serde_json::from_str::<GenerationConfig>(r#"{"early_stopping": "soon"}"#).is_err());
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        let bad = |edit: fn(&mut GenerationConfig), name: &str| {
            let mut c = GenerationConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        };
        let bad_sampling = |edit: fn(&mut GenerationConfig), name: &str| {
            let mut c = GenerationConfig {
                do_sample: true,
                ..GenerationConfig::default()
            };
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        };
        bad_sampling(|c| c.top_p = 0.0, "top_p");
        bad_sampling(|c| c.top_p = 1.5, "top_p");
        bad_sampling(|c| c.temperature = -1.0, "temperature");
        bad_sampling(|c| c.temperature = 1e-300, "temperature");
        bad_sampling(|c| c.min_p = Some(1.5), "min_p");
        bad_sampling(|c| c.typical_p = 0.0, "typical_p");
        bad(|c| c.num_beams = 0, "num_beams");
        bad(|c| c.stop_strings = vec![String::new()], "stop_strings");
        bad(|c| c.bad_words_ids = vec![vec![]], "bad_words_ids");
        bad(|c| c.repetition_penalty = 1e-300, "repetition_penalty");
        bad(
            |c| {
                c.num_beams = 2;
                c.num_return_sequences = 3
            },
            "num_return_sequences",
        );
        assert!(GenerationConfig::default().validate().is_ok());
        // transformers ignores sampling values under greedy decoding: so do we.
        let greedy = GenerationConfig {
            temperature: 0.0,
            top_p: 0.0,
            ..GenerationConfig::default()
        };
        assert!(greedy.validate().is_ok());
    }

    #[test]
    fn new_token_budget() {
        let mut c = GenerationConfig::default();
        assert_eq!(c.new_tokens_for(5), 15);
        c.max_new_tokens = Some(3);
        assert_eq!(c.new_tokens_for(5), 3);
    }
}
