//! The embedded KJV pair (models/, trained by tools/train_embedded.py) loads, tokenizes, and
//! speculative decoding with its draft gives exactly the target's greedy text.

use decode::core::GenerationConfig;
use decode::models::backend::{Cpu, cpu_device};
use decode::models::{Gpt2, Tokenizer};
use decode::samplers::SamplerChain;
use decode::samplers::engine::Engine;
use decode::samplers::speculative::{DraftModel, DraftSchedule};

#[test]
fn the_embedded_pair_runs_and_speculation_is_lossless() {
    let target_dir = decode::embedded::target_dir().unwrap();
    let target = Gpt2::<Cpu>::load(&target_dir, &cpu_device()).unwrap();
    let draft = Gpt2::<Cpu>::load(decode::embedded::draft_dir().unwrap(), &cpu_device()).unwrap();
    let tokenizer = Tokenizer::from_dir(&target_dir).unwrap();
    let draft_tokenizer = Tokenizer::from_dir(decode::embedded::draft_dir().unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size(), draft_tokenizer.vocab_size());

    let verse = "And God said, Let there be light: and there was light.";
    let ids = tokenizer.encode(verse).unwrap();
    assert_eq!(tokenizer.decode(&ids).unwrap(), verse);

    let prompts = [tokenizer.encode("And God said").unwrap()];
    let config = GenerationConfig {
        max_new_tokens: Some(40),
        ..GenerationConfig::default()
    };
    let plain = Engine::new(&target, &config)
        .chains(|_| SamplerChain::greedy())
        .run(&prompts)
        .unwrap();
    let mut drafter = DraftModel::new(&draft, 0);
    let fast = Engine::new(&target, &config)
        .speculative(&mut drafter, DraftSchedule::Constant(4))
        .chains(|_| SamplerChain::greedy())
        .run(&prompts)
        .unwrap();
    assert_eq!(plain[0].sequences[0].ids, fast[0].sequences[0].ids);
    let spec = fast[0].stats.speculative.clone().unwrap();
    assert!(spec.acceptance_rate > 0.3, "{spec:?}");
    assert!(fast[0].stats.target_forward_calls < plain[0].stats.target_forward_calls);
    let text = tokenizer.decode(&plain[0].sequences[0].ids).unwrap();
    assert!(
        text.chars().filter(|c| c.is_alphabetic()).count() > 40,
        "{text}"
    );
}
