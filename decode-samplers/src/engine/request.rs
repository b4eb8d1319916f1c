//! Checks a request before anything runs: the merged settings, every prompt against the model,
//! the token ids the settings name, and the memory the request needs.

use decode_core::{Batch, Error, GenerationConfig, LanguageModel, Result};

/// The most memory one request may need (KV caches of every row at full length, plus a step's
/// logits), estimated before anything is allocated: above it the request is refused with what it
/// would need, where an allocation would abort the process.
pub const MAX_REQUEST_BYTES: u64 = 16 << 30;

/// Checks a generation request before anything runs (the merged config, then every prompt against
/// the model and its token budget, the token ids the settings name against the vocabulary, and
/// the memory it needs) and returns the EOS ids it stops on: the config's, else the model's.
pub fn check_request<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<u32>> {
    config.validate()?;
    if prompts.is_empty() {
        return Err(Error::invalid("prompt", "no prompts given"));
    }
    let vocab = model.vocab_size();
    if let Some((name, id)) = config.token_ids().find(|&(_, id)| id as usize >= vocab) {
        return Err(Error::invalid(
            name,
            format!("token id {id} is outside the vocabulary (size {vocab})"),
        ));
    }
    for prompt in prompts {
        if config.max_new_tokens.is_none() && prompt.len() >= config.max_length {
            // transformers raises here too: nothing would be generated.
            return Err(Error::invalid(
                "max_length",
                format!(
                    "{} leaves no room after the {}-token prompt: raise it or give max-new-tokens",
                    config.max_length,
                    prompt.len()
                ),
            ));
        }
        check_prompt(model, prompt, config.new_tokens_for(prompt.len()))?;
    }
    check_memory(model, prompts, config)?;
    Ok(match &config.eos_token_ids {
        Some(ids) => ids.clone(),
        None => model.eos_token_ids().to_vec(),
    })
}

/// Refuses a request whose rows (prompts × sequences or beams) at full length would need more
/// than [`MAX_REQUEST_BYTES`], with checked arithmetic throughout.
fn check_memory<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<()> {
    let per_prompt = config.num_return_sequences.max(config.num_beams);
    let longest = prompts
        .iter()
        .map(|p| p.len().saturating_add(config.new_tokens_for(p.len())))
        .max()
        .unwrap_or(0);
    let rows = (prompts.len() as u64).checked_mul(per_prompt as u64);
    let cache = rows
        .and_then(|r| r.checked_mul(longest as u64))
        .and_then(|n| n.checked_mul(model.cache_bytes_per_position() as u64));
    let logits = rows.and_then(|r| r.checked_mul(model.vocab_size() as u64 * 4));
    let needed = cache.zip(logits).and_then(|(c, l)| c.checked_add(l));
    match needed {
        Some(bytes) if bytes <= MAX_REQUEST_BYTES => Ok(()),
        _ => Err(Error::invalid(
            "num_return_sequences",
            format!(
                "{} prompts × {per_prompt} sequences or beams × {longest} positions need {} of \
                 cache and logits, over the {} GiB limit",
                prompts.len(),
                needed.map_or("more than 2^64 bytes".into(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
                MAX_REQUEST_BYTES >> 30
            ),
        )),
    }
}

/// Checks a prompt before generating: not empty, ids in the vocabulary, prompt plus
/// `max_new_tokens` within the context.
pub fn check_prompt<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::invalid(
            "prompt",
            "is empty (give at least one token)",
        ));
    }
    Batch::single(prompt).check_vocab(model.vocab_size())?;
    let needed = prompt.len().saturating_add(max_new_tokens);
    if needed > model.context_length() {
        return Err(Error::ContextOverflow {
            needed,
            limit: model.context_length(),
        });
    }
    Ok(())
}
