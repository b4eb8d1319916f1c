//! Property tests of the parsers (proptest, a bounded number of cases from a fixed seed, so CI is
//! fast and never flaky): random bytes and random mutations of a valid `config.json`,
//! `generation_config.json`, `model.safetensors` and `tokenizer.json` never panic, and never
//! allocate more than a bound while they are read (a counting allocator measures the peak).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use decode_core::GenerationConfig;
use decode_models::weights::Gpt2Weights;
use decode_models::{Gpt2Config, Tokenizer};
use proptest::prelude::*;
use serde_json::Value;

/// Counts the bytes allocated now and the peak since [`peak_during`] last reset it.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are global.
static MEASURING: Mutex<()> = Mutex::new(());

/// Runs `f`, returning the most bytes it had allocated at once beyond what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// Reading any input may take this much beyond the input itself (the largest real parse, GPT-2's
/// tokenizer, peaks near 60 MiB).
const ALLOCATION_BOUND: usize = 256 << 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary file holding `bytes`, named `name` in its own folder.
fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "decode-properties-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn cleanup(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xdec0de),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A JSON value a hostile file might hold in any field.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        ".{0,8}".prop_map(Value::from),
        prop::collection::vec(any::<u32>(), 0..4).prop_map(Value::from),
        Just(serde_json::json!([[]])),
    ]
}

/// `base` (a JSON object) with up to four fields set to hostile values (existing keys or not),
/// or replaced by something that is not an object at all.
fn mutated_json(base: Value) -> impl Strategy<Value = Vec<u8>> {
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    let key = prop_oneof![prop::sample::select(keys), ".{1,6}"];
    let edits = prop::collection::vec((key, hostile_value()), 0..4);
    prop_oneof![
        8 => edits.prop_map(move |edits| {
            let mut v = base.clone();
            for (k, value) in edits {
                v[k] = value;
            }
            serde_json::to_vec(&v).unwrap()
        }),
        1 => prop::collection::vec(hostile_value(), 0..3).prop_map(|a| serde_json::to_vec(&a).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root().join(path)).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_json_never_panics_or_overallocates(
        bytes in mutated_json(fixture_json("tests/fixtures/gpt2-tiny-tied/config.json"))
    ) {
        let path = write_temp("config.json", &bytes);
        let (result, peak) = peak_during(|| Gpt2Config::from_file(&path));
        cleanup(&path);
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        if let Ok(config) = result {
            // What it accepted, it accepted whole: the sizes derived from it do not overflow.
            prop_assert!(config.parameter_count() > 0);
            prop_assert!(config.n_embd.is_multiple_of(config.n_head));
        }
    }

    #[test]
    fn generation_config_never_panics_or_overallocates(
        bytes in mutated_json(fixture_json("tests/fixtures/gpt2-tiny-tied/generation_config.json"))
    ) {
        let path = write_temp("generation_config.json", &bytes);
        let (result, peak) = peak_during(|| GenerationConfig::from_file(&path).map(|c| c.validate()));
        cleanup(&path);
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        let _ = result;
    }
}

/// The tiny fixture's safetensors with a few bytes overwritten, most often in the header (its
/// length prefix and JSON), where a parser can be led astray.
fn mutated_safetensors() -> impl Strategy<Value = Vec<u8>> {
    let base =
        std::fs::read(root().join("tests/fixtures/gpt2-tiny-tied/model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let len = base.len();
    prop_oneof![
        4 => prop::collection::vec((0..header, any::<u8>()), 1..6),
        1 => prop::collection::vec((0..len, any::<u8>()), 1..6),
        1 => (any::<u64>(), Just(0usize)).prop_map(|(n, _)| n.to_le_bytes().iter().enumerate().map(|(i, &b)| (i, b)).collect()),
    ]
    .prop_flat_map(move |edits| {
        let mut bytes = base.clone();
        for (at, b) in edits {
            bytes[at] = b;
        }
        (Just(bytes), 0..=len).prop_map(move |(mut bytes, cut)| {
            if cut < len / 8 {
                bytes.truncate(cut); // sometimes truncated too
            }
            bytes
        })
    })
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn safetensors_never_panics_or_overallocates(bytes in mutated_safetensors()) {
        let config = Gpt2Config::from_file(root().join("tests/fixtures/gpt2-tiny-tied/config.json")).unwrap();
        let size = bytes.len();
        let path = write_temp("model.safetensors", &bytes);
        let (result, peak) = peak_during(|| Gpt2Weights::read(&path, &config).map(|_| ()));
        cleanup(&path);
        prop_assert!(peak < ALLOCATION_BOUND + 4 * size, "peak {peak}");
        let _ = result;
    }
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn tokenizer_json_never_panics_or_overallocates(
        edits in prop::collection::vec((0usize..4096, any::<u8>()), 1..6),
        cut in any::<bool>(),
    ) {
        let mut bytes = std::fs::read(root().join("../assets/gpt2-tokenizer/tokenizer.json")).unwrap();
        // The head holds the pre-tokenizer, decoder and model settings: the structural part.
        for (at, b) in edits {
            bytes[at] = b;
        }
        if cut {
            bytes.truncate(bytes.len() / 2);
        }
        let path = write_temp("tokenizer.json", &bytes);
        let (result, peak) = peak_during(|| Tokenizer::from_file(&path).map(|t| t.vocab_size()));
        cleanup(&path);
        prop_assert!(peak < ALLOCATION_BOUND, "peak {peak}");
        let _ = result;
    }
}
