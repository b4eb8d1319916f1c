//! Text in, text out: the generation loop with a tokenizer, streaming text deltas and stop strings.

use decode_core::{
    Error, Flow, GenerationConfig, GenerationOutput, LanguageModel, Result, generate,
};
use decode_models::Tokenizer;
use decode_samplers::speculative::{DraftSchedule, Drafter, speculative_generate};
use decode_samplers::{SamplerChain, beam_search};

/// Speculative decoding settings for [`generate_text`].
pub struct Speculation<'a> {
    /// What proposes tokens: a `DraftModel`, `PromptLookup`, or your own.
    pub drafter: &'a mut dyn Drafter,
    /// How many tokens to draft per verify step.
    pub schedule: DraftSchedule,
}

/// New text of one sequence, as it is generated. Never splits a UTF-8 character: a character
/// spread over several tokens arrives with its last token (earlier deltas are empty).
#[derive(Debug, Clone, Copy)]
pub struct TextDelta<'a> {
    /// Which sequence (`0..num_return_sequences`).
    pub sequence: usize,
    /// The id just generated.
    pub token: u32,
    /// The text it completes.
    pub text: &'a str,
}

/// Generates from `prompt` with the chain `config` describes (greedy, sampling or beam search),
/// calling `on_delta` with each sequence's new text as it comes. A sequence also stops once its
/// text contains one of `config.stop_strings`, or when `on_delta` returns [`Flow::Stop`].
///
/// With `speculation`, a drafter proposes and the model verifies (same output distribution; the
/// stats gain `speculative`). Beam search reports nothing while it runs (beams change until the
/// end). Without a tokenizer the deltas carry no text (ids only) and stop strings are refused.
///
/// Refused before anything is generated: an empty stop string, and a tokenizer that does not fit
/// the model ([`Tokenizer::check_against`]: not byte-level, gaps in its ids, or more ids than the
/// model's vocabulary).
pub fn generate_text<M: LanguageModel>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerationConfig,
    speculation: Option<Speculation<'_>>,
    mut on_delta: impl FnMut(&TextDelta<'_>) -> Flow,
) -> Result<GenerationOutput> {
    // The whole request (settings, prompt, memory, an empty stop string…) before a sampler per
    // sequence is built: a huge num_return_sequences is refused here, not allocated.
    let eos = decode_core::generate::check_request(model, &[prompt.to_vec()], config)?;
    match tokenizer {
        // Now rather than mid-stream (or never: a gap in the ids loses words silently).
        Some(tokenizer) => tokenizer.check_against(model.vocab_size())?,
        None if !config.stop_strings.is_empty() => {
            return Err(Error::invalid("stop", "stop strings need a tokenizer"));
        }
        None => {}
    }
    if config.num_beams > 1 {
        if speculation.is_some() {
            return Err(Error::Unsupported(
                "beam search with a draft model or prompt lookup".into(),
            ));
        }
        if !config.stop_strings.is_empty() {
            return Err(Error::Unsupported("stop strings with beam search".into()));
        }
        let chain = SamplerChain::from_config(config, &eos, 0)?;
        return beam_search(model, prompt, config, &chain);
    }
    let chains = (0..config.num_return_sequences)
        .map(|i| SamplerChain::from_config(config, &eos, i))
        .collect::<Result<Vec<_>>>()?;
    let mut streams: Vec<_> = chains
        .iter()
        .map(|_| (tokenizer.map(Tokenizer::stream), String::new()))
        .collect();
    let mut failure = None;
    let on_token = |event: &decode_core::TokenEvent<'_>| {
        let (stream, text) = &mut streams[event.sequence];
        let piece = match stream.as_mut().map(|s| s.push(event.token)) {
            None => String::new(),
            Some(Ok(piece)) => piece,
            Some(Err(e)) => {
                failure.get_or_insert(e);
                return Flow::Stop;
            }
        };
        text.push_str(&piece);
        let delta = TextDelta {
            sequence: event.sequence,
            token: event.token,
            text: &piece,
        };
        let stop = on_delta(&delta) == Flow::Stop
            || config
                .stop_strings
                .iter()
                .any(|s| text.contains(s.as_str()));
        if stop { Flow::Stop } else { Flow::Continue }
    };
    let prompts = [prompt.to_vec()];
    let mut outputs = match speculation {
        None => generate(model, &prompts, config, |i| chains[i].clone(), on_token)?,
        Some(s) => speculative_generate(
            model,
            s.drafter,
            &prompts,
            config,
            s.schedule,
            |i| chains[i].clone(),
            on_token,
        )?,
    };
    if let Some(e) = failure {
        return Err(e);
    }
    // Whatever an unfinished character left behind.
    for (sequence, (stream, _)) in streams.iter_mut().enumerate() {
        let rest = stream.as_mut().map(|s| s.finish()).unwrap_or_default();
        if !rest.is_empty() {
            let token = outputs[0].sequences[sequence]
                .ids
                .last()
                .copied()
                .unwrap_or(0);
            on_delta(&TextDelta {
                sequence,
                token,
                text: &rest,
            });
        }
    }
    outputs
        .pop()
        .ok_or_else(|| Error::Shape("generation returned no output".into()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use decode_models::Gpt2;
    use decode_models::backend::{Cpu, cpu_device};

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The tiny test model: 211 ids, 40 positions.
    fn tiny() -> Gpt2<Cpu> {
        Gpt2::load(
            root().join("decode-models/tests/fixtures/gpt2-tiny-tied"),
            &cpu_device(),
        )
        .unwrap()
    }

    /// The embedded tokenizer cut to its first `n` ids (single bytes and `<|endoftext|>`: no merge
    /// survives), loaded from a scratch file.
    fn kjv_tokenizer_cut_to(n: u64) -> Tokenizer {
        let path = root().join("models/kjv-target/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < n));
        json["model"]["merges"] = serde_json::json!([]);
        let scratch =
            std::env::temp_dir().join(format!("decode-text-tok-{n}-{}.json", std::process::id()));
        std::fs::write(&scratch, json.to_string()).unwrap();
        let tokenizer = Tokenizer::from_file(&scratch);
        std::fs::remove_file(&scratch).ok();
        tokenizer.unwrap()
    }

    fn greedy(n: usize) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: Some(n),
            ignore_eos: true,
            ..GenerationConfig::default()
        }
    }

    #[test]
    fn a_tokenizer_with_more_ids_than_the_model_is_refused_before_generating() {
        let model = tiny();
        let tokenizer =
            Tokenizer::from_file(root().join("assets/gpt2-tokenizer/tokenizer.json")).unwrap();
        let mut deltas = 0;
        let err = generate_text(&model, Some(&tokenizer), &[1, 2], &greedy(4), None, |_| {
            deltas += 1;
            Flow::Continue
        })
        .unwrap_err();
        assert!(matches!(err, Error::VocabMismatch(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("50257") && message.contains("211"),
            "{message}"
        );
        assert_eq!(deltas, 0, "nothing is generated");
    }

    #[test]
    fn an_id_past_a_smaller_tokenizer_is_a_typed_error() {
        // A padded model vocabulary: 211 model ids, 150 tokenizer ids. The pair is accepted, and
        // an id past the tokenizer's (made certain by a logit bias) ends the run with a typed error
        // naming it, not a panic or lost text.
        let model = tiny();
        let tokenizer = kjv_tokenizer_cut_to(150);
        assert_eq!(tokenizer.vocab_size(), 150);
        tokenizer.check_against(model.vocab_size()).unwrap();
        let config = GenerationConfig {
            logit_bias: BTreeMap::from([(180, 1e4)]),
            ..greedy(3)
        };
        let err = generate_text(&model, Some(&tokenizer), &[40, 41], &config, None, |_| {
            Flow::Continue
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TokenOutOfRange {
                    id: 180,
                    vocab_size: 150
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_empty_stop_string_is_refused() {
        let model = tiny();
        let tokenizer = kjv_tokenizer_cut_to(150);
        for tokenizer in [None, Some(&tokenizer)] {
            let config = GenerationConfig {
                stop_strings: vec!["\n".into(), String::new()],
                ..greedy(4)
            };
            let err = generate_text(&model, tokenizer, &[40, 41], &config, None, |_| {
                Flow::Continue
            })
            .unwrap_err();
            assert!(
                matches!(err, Error::InvalidParameter { name: "stop", ref message }
                    if message.contains("empty stop string")),
                "{err}"
            );
        }
    }
}
