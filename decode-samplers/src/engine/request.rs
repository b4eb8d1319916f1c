//! Checks a request before anything runs: the merged settings, every prompt against the model,
//! the token ids the settings name, and the memory the request needs against what the process
//! may use.

use decode_core::{Batch, Error, GenerationConfig, LanguageModel, Result};

/// The limit requests are checked against where the system reports none (outside Linux) and no
/// [`crate::Engine::memory_limit`] is set.
pub const FALLBACK_MEMORY_LIMIT: u64 = 16 << 30;

/// The memory a request may use: the tightest of what the system says this process may still
/// allocate ([`decode_core::memory::available_bytes`]: its address-space limit, its cgroup's,
/// the machine's available memory) and `setting` (a cap the caller chose), or
/// [`FALLBACK_MEMORY_LIMIT`] when neither says anything.
pub fn memory_limit(setting: Option<u64>) -> u64 {
    match (decode_core::memory::available_bytes(), setting) {
        (Some(system), Some(cap)) => system.min(cap),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => FALLBACK_MEMORY_LIMIT,
    }
}

/// Checks a generation request before anything runs (the merged config, then every prompt against
/// the model and its token budget, and the token ids the settings name against the vocabulary)
/// and returns the EOS ids it stops on: the config's, else the model's. The memory it needs is
/// [`check_memory`]'s.
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
    Ok(match &config.eos_token_ids {
        Some(ids) => ids.clone(),
        None => model.eos_token_ids().to_vec(),
    })
}

/// The most bytes a request holds at once, from the model's own figures: the KV cache as the
/// engine allocates it (every row left-padded to the longest prompt, room for its whole budget,
/// and under speculative decoding for one pass of drafts more; beam search runs one prompt at a
/// time and holds a second copy while it reorders its beams), the logits of a pass, and the
/// activations of the largest pass (the prefill). `None` when it passes `u64`.
pub fn memory_needed<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    speculative: bool,
) -> Option<u64> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as u64;
    let budget = prompts
        .iter()
        .map(|p| config.new_tokens_for(p.len()))
        .max()
        .unwrap_or(0) as u64;
    let context = model.context_length() as u64;
    let vocab = model.vocab_size() as u64;
    let (per_slot, per_token) = (
        model.cache_bytes_per_position() as u64,
        model.pass_bytes_per_token() as u64,
    );
    let mul = |a: u64, b: u64| a.checked_mul(b);
    if config.num_beams > 1 {
        let beams = config.num_beams as u64;
        let slots = longest.checked_add(budget)?.min(context);
        let cache = mul(mul(2 * beams, slots)?, per_slot)?;
        // Each step's logits, their log-softmax, and the candidates drawn from them.
        let logits = mul(mul(3 * beams, vocab)?, 4)?;
        let pass = mul(beams.max(longest), per_token)?;
        return cache.checked_add(logits)?.checked_add(pass);
    }
    let rows = mul(prompts.len() as u64, config.num_return_sequences as u64)?;
    let drafts = if speculative {
        1 + crate::speculative::MAX_DRAFT_TOKENS as u64
    } else {
        0
    };
    let slots = longest
        .checked_add(budget)?
        .checked_add(drafts)?
        .min(context);
    let cache = mul(mul(rows, slots)?, per_slot)?;
    // A verify pass scores every draft token: its logits are the largest.
    let logits = mul(mul(mul(rows, 1 + drafts)?, vocab)?, 4)?;
    let pass = mul(mul(rows, longest.max(1 + drafts))?, per_token)?;
    cache.checked_add(logits)?.checked_add(pass)
}

/// Refuses a request whose [`memory_needed`] passes `limit` (see [`memory_limit`]), with what it
/// would need: before anything is allocated, where an allocation would abort the process.
pub fn check_memory<M: LanguageModel>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    speculative: bool,
    limit: u64,
) -> Result<()> {
    let needed = memory_needed(model, prompts, config, speculative);
    if needed.is_some_and(|bytes| bytes <= limit) {
        return Ok(());
    }
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let (name, what) = if config.num_beams > 1 {
        ("num_beams", format!("{} beams", config.num_beams))
    } else {
        (
            "num_return_sequences",
            format!(
                "{} prompts × {} sequences",
                prompts.len(),
                config.num_return_sequences
            ),
        )
    };
    Err(Error::invalid(
        name,
        format!(
            "{what} need {} of KV cache, logits and activations, more than the {} this process \
             may use",
            needed.map_or("more than 2^64 bytes".into(), gib),
            gib(limit)
        ),
    ))
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
