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
pub fn generate_text<M: LanguageModel>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerationConfig,
    speculation: Option<Speculation<'_>>,
    mut on_delta: impl FnMut(&TextDelta<'_>) -> Flow,
) -> Result<GenerationOutput> {
    let eos = config
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids().to_vec());
    if tokenizer.is_none() && !config.stop_strings.is_empty() {
        return Err(Error::invalid("stop", "stop strings need a tokenizer"));
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
