//! The real GPT-2 tokenizer against ids that transformers and tiktoken agreed on
//! (tests/fixtures/tokenizer_cases.json, made by tools/make_fixtures.py).

use std::path::PathBuf;

use decode_models::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/gpt2-tokenizer")
}

fn cases() -> Vec<Case> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tokenizers() -> [(&'static str, Tokenizer); 2] {
    let dir = assets();
    [
        (
            "tokenizer.json",
            Tokenizer::from_file(dir.join("tokenizer.json")).unwrap(),
        ),
        (
            "vocab.json + merges.txt",
            Tokenizer::from_vocab_merges(dir.join("vocab.json"), dir.join("merges.txt")).unwrap(),
        ),
    ]
}

#[test]
fn ids_match_transformers_and_tiktoken() {
    let cases = cases();
    assert!(cases.len() >= 30);
    for (source, tokenizer) in tokenizers() {
        assert_eq!(tokenizer.vocab_size(), 50257, "{source}");
        for case in &cases {
            assert_eq!(
                tokenizer.encode(&case.text).unwrap(),
                case.ids,
                "{source}: {:?}",
                case.text
            );
        }
    }
}

#[test]
fn decode_inverts_encode() {
    for (source, tokenizer) in tokenizers() {
        for case in cases() {
            assert_eq!(tokenizer.decode(&case.ids).unwrap(), case.text, "{source}");
        }
    }
}

#[test]
fn streaming_emits_whole_characters_only() {
    let [(_, tokenizer), _] = tokenizers();
    for case in cases() {
        let mut stream = tokenizer.stream();
        let mut text = String::new();
        for &id in &case.ids {
            let piece = stream.push(id).unwrap();
            assert!(
                !piece.contains('\u{FFFD}'),
                "split character in {:?}",
                case.text
            );
            text.push_str(&piece);
        }
        text.push_str(&stream.finish());
        assert_eq!(text, case.text);
    }
    // A family emoji spans many byte-level tokens; nothing comes out until it is whole.
    let ids = tokenizer.encode("👨‍👩‍👧").unwrap();
    assert!(ids.len() > 3);
    let mut stream = tokenizer.stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(pieces.concat(), "👨‍👩‍👧");
    assert!(
        pieces.iter().any(String::is_empty),
        "some ids end mid-character"
    );
}

#[test]
fn out_of_vocabulary_ids_are_errors() {
    let [(_, tokenizer), _] = tokenizers();
    let err = tokenizer.decode(&[50257]).unwrap_err();
    assert!(
        matches!(err, decode_core::Error::TokenOutOfRange { id: 50257, .. }),
        "{err}"
    );
    assert!(tokenizer.stream().push(u32::MAX).is_err());
}

#[test]
fn missing_and_corrupt_files_are_errors() {
    let err = Tokenizer::from_file("/no/such/tokenizer.json").unwrap_err();
    assert!(matches!(err, decode_core::Error::Io { .. }), "{err}");
    let dir = std::env::temp_dir().join(format!("decode-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err();
    assert!(matches!(err, decode_core::Error::Format { .. }), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
