//! Beam search with the embedded KJV model (or any GPT-2 directory): the best 3 of 4 beams.
//!
//! ```text
//! cargo run --release --example beam -- [MODEL_DIR] ["prompt"]
//! ```

use decode::core::{EarlyStopping, GenerationConfig, LanguageModel};
use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Tokenizer};
use decode::samplers::{SamplerChain, beam_search};

fn main() -> decode::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => dir.into(),
        None => decode::embedded::target_dir()?,
    };
    let prompt = args.next().unwrap_or_else(|| "In the beginning".into());
    let model = Gpt2::<Cpu>::load(&dir, &cpu_device())?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    // beam_search takes ids: the tokenizer's fit with the model is checked here.
    tokenizer.check_against(model.vocab_size())?;
    let config = GenerationConfig {
        max_new_tokens: Some(24),
        num_beams: 4,
        num_return_sequences: 3,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::Flag(true),
        no_repeat_ngram_size: 3,
        ..GenerationConfig::default()
    };
    let ids = tokenizer.encode(&prompt)?;
    // The chain's processors (here no-repeat-n-gram) shape every beam's log-probabilities.
    let chain = SamplerChain::from_config(&config, &[], 0)?;
    let out = beam_search(&model, &ids, &config, &chain)?;
    for (rank, seq) in out.sequences.iter().enumerate() {
        let score = seq.score.unwrap_or(f32::NAN);
        println!(
            "#{rank} ({score:.3}) {prompt}{}",
            tokenizer.decode(&seq.ids)?
        );
    }
    Ok(())
}
