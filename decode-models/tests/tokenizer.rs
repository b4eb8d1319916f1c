//! The real GPT-2 tokenizer against ids that transformers and tiktoken agreed on
//! (tests/fixtures/tokenizer_cases.json, made by tools/make_fixtures.py).

use std::path::PathBuf;

use decode_core::Error;
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

/// The embedded model's tokenizer (4096 ids, byte-level BPE), as JSON to edit.
fn kjv_json() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/kjv-target/tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Loads `json` as a tokenizer.json (through a scratch file, as a user's would be).
fn load_json(tag: &str, json: &serde_json::Value) -> Tokenizer {
    let path = std::env::temp_dir().join(format!("decode-tok-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, json.to_string()).unwrap();
    let tokenizer = Tokenizer::from_file(&path);
    std::fs::remove_file(&path).ok();
    tokenizer.unwrap()
}

/// `check_against(vocab)` fails with `matches`, in one line that contains every needle.
fn misfit(tokenizer: &Tokenizer, vocab: usize, needles: &[&str], matches: fn(&Error) -> bool) {
    let err = tokenizer
        .check_against(vocab)
        .expect_err("the tokenizer must be refused");
    let message = err.to_string();
    assert!(matches(&err), "unexpected variant: {err:?}");
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} lacks {needle:?}"
        );
    }
    assert!(!message.contains('\n'), "not one line: {message:?}");
}

#[test]
fn the_tokenizer_must_fit_the_model_vocabulary() {
    for (source, tokenizer) in tokenizers() {
        tokenizer
            .check_against(50257)
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        // A padded checkpoint (more model ids than tokens) is fine…
        tokenizer
            .check_against(50304)
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        // …and an id past the tokenizer's decodes to a typed error, in one piece or streamed.
        let err = tokenizer.decode(&[50300]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TokenOutOfRange {
                    id: 50300,
                    vocab_size: 50257
                }
            ),
            "{source}: {err}"
        );
        let mut stream = tokenizer.stream();
        assert!(stream.push(464).is_ok());
        let err = stream.push(50300).unwrap_err();
        assert!(
            matches!(err, Error::TokenOutOfRange { .. }),
            "{source}: {err}"
        );
        // A model with fewer ids than the tokenizer could not take its last ones.
        misfit(&tokenizer, 4096, &["50257", "4096"], |e| {
            matches!(e, Error::VocabMismatch(_))
        });
    }
    let kjv = load_json("kjv", &kjv_json());
    assert_eq!(kjv.vocab_size(), 4096);
    kjv.check_against(4096).unwrap();
}

#[test]
fn tokenizers_that_are_not_byte_level_are_refused() {
    let not_byte_level = |e: &Error| matches!(e, Error::Tokenizer(_));
    // WordPiece (BERT's), with its own pre-tokenizer and decoder.
    let wordpiece = serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": {"[UNK]": 0, "and": 1, "god": 2, "said": 3, "##s": 4}
        }
    });
    let tokenizer = load_json("wordpiece", &wordpiece);
    misfit(
        &tokenizer,
        4096,
        &["WordPiece", "byte-level"],
        not_byte_level,
    );
    // A BPE whose text is split on whitespace and decoded as is, not mapped through bytes.
    let mut json = kjv_json();
    json["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    misfit(
        &load_json("whitespace", &json),
        4096,
        &["ByteLevel pre-tokenizer"],
        not_byte_level,
    );
    for decoder in [
        serde_json::Value::Null,
        serde_json::json!({"type": "BPEDecoder", "suffix": "</w>"}),
        serde_json::json!({"type": "Sequence", "decoders": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]}),
    ] {
        let mut json = kjv_json();
        json["decoder"] = decoder.clone();
        misfit(
            &load_json("decoder", &json),
            4096,
            &["ByteLevel decoder"],
            not_byte_level,
        );
    }
    // A vocabulary token outside GPT-2's byte alphabet: the vocabulary is not byte-level.
    let mut json = kjv_json();
    json["model"]["vocab"]["中"] = 4096.into();
    misfit(
        &load_json("cjk", &json),
        4097,
        &["token 4096", "byte-level alphabet"],
        not_byte_level,
    );
    // Llama 3's layout, a regex split then the byte map without its own regex, is byte-level.
    let mut json = kjv_json();
    json["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
    ]});
    let tokenizer = load_json("sequence", &json);
    tokenizer.check_against(4096).unwrap();
    let text = "And God said, Let there be light";
    let ids = tokenizer.encode(text).unwrap();
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);
}

#[test]
fn gaps_in_the_ids_are_refused() {
    // The last token moved far away: 4096 tokens, no id 4095, and an id no table could index.
    let mut json = kjv_json();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let last = vocab
        .iter()
        .find(|(_, id)| id.as_u64() == Some(4095))
        .map(|(token, _)| token.clone())
        .unwrap();
    vocab[&last] = 4_000_000_000u64.into();
    let tokenizer = load_json("gap", &json);
    assert_eq!(tokenizer.vocab_size(), 4096);
    for vocab in [4096, 1 << 32] {
        misfit(
            &tokenizer,
            vocab,
            &["not 0..4096", "id 4095", "4000000000"],
            |e| matches!(e, Error::Tokenizer(_)),
        );
    }
    // Unchecked, an id in the gap decodes to an error, not to nothing.
    let err = tokenizer.decode(&[1, 4095]).unwrap_err();
    assert!(
        matches!(err, Error::Tokenizer(ref m) if m.contains("4095")),
        "{err}"
    );
    assert!(tokenizer.stream().push(4095).is_err());
    // An empty vocabulary fits no model either.
    let mut json = kjv_json();
    json["model"]["vocab"] = serde_json::json!({});
    json["model"]["merges"] = serde_json::json!([]);
    json["added_tokens"] = serde_json::json!([]);
    misfit(&load_json("empty", &json), 4096, &["no tokens"], |e| {
        matches!(e, Error::Tokenizer(_))
    });
}
