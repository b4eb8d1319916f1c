//! Beam search with the embedded KJV model (or any GPT-2 directory): the best 3 of 4 beams.
//!
//! ```text
//! cargo run --release --example beam -- [MODEL_DIR] ["prompt"]
//! ```

use decode::Generator;
use decode::core::{EarlyStopping, GenerationConfig};

fn main() -> decode::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => dir.into(),
        None => decode::embedded::target_dir()?,
    };
    let prompt = args.next().unwrap_or_else(|| "In the beginning".into());
    // num_beams > 1 is beam search; no-repeat-n-gram shapes every beam's log-probabilities.
    let generator = Generator::from_dir(&dir)?.with_config(GenerationConfig {
        max_new_tokens: Some(24),
        num_beams: 4,
        num_return_sequences: 3,
        early_stopping: EarlyStopping::Flag(true),
        no_repeat_ngram_size: 3,
        ..GenerationConfig::default()
    })?;
    let out = generator.generate(&prompt)?;
    for (rank, seq) in out.sequences.iter().enumerate() {
        let score = seq.score.unwrap_or(f32::NAN);
        println!("#{rank} ({score:.3}) {prompt}{}", seq.text);
    }
    Ok(())
}
