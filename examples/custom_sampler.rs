//! A logits processor written in application code, composed with the built-in ones.
//!
//! ```text
//! cargo run --release --example custom_sampler -- [MODEL_DIR]
//! ```
//! (defaults to the tiny test model in decode-models/tests/fixtures).

use decode::core::{Context, GenerationConfig, LogitsProcessor};
use decode::models::Gpt2;
use decode::models::backend::{Cpu, cpu_device};
use decode::samplers::processors::{Temperature, TopK};
use decode::samplers::{Engine, SamplerChain};

/// Forbids repeating the previous token. Stateful on purpose: it learns the last token through
/// `accept`, which the loop calls only for tokens it keeps.
#[derive(Clone, Default)]
struct NoImmediateRepeat {
    last: Option<u32>,
}

impl LogitsProcessor for NoImmediateRepeat {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        if let Some(last) = self.last {
            logits[last as usize] = f32::NEG_INFINITY;
        }
    }
    fn accept(&mut self, token: u32) {
        self.last = Some(token);
    }
    fn reset(&mut self) {
        self.last = None;
    }
    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

fn main() -> decode::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/decode-models/tests/fixtures/gpt2-tiny-tied"
        )
        .into()
    });
    let model = Gpt2::<Cpu>::load(&dir, &cpu_device())?;
    let chain = SamplerChain::sampling(7)
        .with(NoImmediateRepeat::default())
        .with_fn(|ctx, logits| {
            // A closure works too: favour even ids once ten tokens are out.
            if ctx.generated().len() >= 10 {
                logits.iter_mut().step_by(2).for_each(|x| *x += 0.5);
            }
        })
        .with(Temperature::new(0.9)?)
        .with(TopK::new(40, 1)?);
    let config = GenerationConfig {
        max_new_tokens: Some(20),
        ..GenerationConfig::default()
    };
    // The chain replaces the one the config would describe (its other fields still apply).
    let out = Engine::new(&model, &config)
        .chains(|_| chain.clone())
        .run(&[vec![1, 2, 3]])?;
    let ids = &out[0].sequences[0].ids;
    assert!(
        ids.windows(2).all(|w| w[0] != w[1]),
        "no token follows itself"
    );
    println!("{ids:?}");
    Ok(())
}
