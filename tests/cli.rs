//! The `generate` example as a user runs it: hostile input and closed or full output streams end
//! the run with a failure status and a one-line message, never a panic or a hang.
//!
//! `cargo test --test cli` does not build examples, so the first test to need `generate` builds it
//! (once per run) with the cargo, profile, target directory and features of this test binary: the
//! binary tested is always the current one.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The most a run may take: the embedded model is small, and refusals come before any generation.
const LIMIT: Duration = Duration::from_secs(60);

/// The target directory and profile this test binary was built in, from its own path
/// (`<target>/<profile>/deps/cli-<hash>`).
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary is in deps/");
    let profile_dir = deps.parent().expect("deps/ is in the profile directory");
    let target = profile_dir
        .parent()
        .expect("the profile is in the target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name")
        .to_string();
    (target.to_path_buf(), profile)
}

/// The `generate` example of this build, built on first use.
fn generate_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let (target, profile) = target_and_profile();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--example", "generate", "--target-dir"])
            .arg(&target);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let features: Vec<&str> = [
            ("cuda", cfg!(feature = "cuda")),
            ("wgpu", cfg!(feature = "wgpu")),
            ("ndarray", cfg!(feature = "ndarray")),
            ("candle", cfg!(feature = "candle")),
            ("ndarray-blas", cfg!(feature = "ndarray-blas")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        let status = build
            .status()
            .expect("cargo must run to build the generate example");
        assert!(
            status.success(),
            "building the generate example failed: {build:?}"
        );
        let exe = target
            .join(&profile)
            .join("examples")
            .join(format!("generate{}", std::env::consts::EXE_SUFFIX));
        assert!(
            exe.is_file(),
            "the generate example is not at {} after {build:?}",
            exe.display()
        );
        exe
    })
}

/// What a finished run left.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails unless the run failed cleanly: a non-zero status that is not a panic's (101), and
    /// no panic message in what was captured.
    fn failed_cleanly(&self) -> &Self {
        assert!(
            !self.status.success(),
            "the run succeeded: {}",
            self.describe()
        );
        assert_ne!(
            self.status.code(),
            Some(101),
            "the run panicked: {}",
            self.describe()
        );
        assert!(
            self.status.code().is_some(),
            "the run was killed by a signal: {}",
            self.describe()
        );
        for text in [&self.stdout, &self.stderr] {
            assert!(!text.contains("panicked"), "a panic: {}", self.describe());
        }
        self
    }

    /// Fails unless stderr is one line that contains every needle.
    fn says(&self, needles: &[&str]) {
        let message = self.stderr.trim_end_matches('\n');
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "stderr is not one line: {}",
            self.describe()
        );
        for needle in needles {
            assert!(
                message.contains(needle),
                "stderr lacks {needle:?}: {}",
                self.describe()
            );
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}, stdout {:?}, stderr {:?}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Where a stream of the run goes.
enum To {
    /// Captured.
    Pipe,
    /// `/dev/full`: every write fails with "no space left on device".
    Full,
    /// A pipe whose reading end is closed at once: every write fails with "broken pipe".
    Closed,
}

/// Runs `generate args`, killing it (and failing) if it takes longer than [`LIMIT`].
fn generate(args: &[&str], stdout: To, stderr: To) -> Run {
    run_generate(args, Limits::default(), stdout, stderr)
}

/// What a run's environment adds: variables, and an address-space limit (`ulimit -v`, KiB).
#[derive(Default)]
struct Limits<'a> {
    env: &'a [(&'a str, &'a str)],
    address_space_kib: Option<u64>,
}

/// Runs `generate args` with `limits`, output captured.
fn generate_with(args: &[&str], limits: Limits) -> Run {
    run_generate(args, limits, To::Pipe, To::Pipe)
}

fn run_generate(args: &[&str], limits: Limits, stdout: To, stderr: To) -> Run {
    let stdio = |to: &To| match to {
        To::Pipe | To::Closed => Stdio::piped(),
        To::Full => File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full must open")
            .into(),
    };
    let mut command = match limits.address_space_kib {
        // The shell sets the limit, then becomes the program.
        Some(kib) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
                .arg(generate_exe());
            sh
        }
        None => Command::new(generate_exe()),
    };
    let mut child = command
        .args(args)
        .envs(limits.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdio(&stdout))
        .stderr(stdio(&stderr))
        .spawn()
        .expect("the generate example must start");
    let reader = |pipe: Option<Box<dyn Read + Send>>, to: &To| {
        let pipe = match to {
            To::Pipe => pipe,
            To::Full | To::Closed => None, // dropped: a closed pipe's reading end closes here
        };
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_string(&mut text).ok();
            }
            text
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        &stdout,
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        &stderr,
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for generate") {
            break status;
        }
        if started.elapsed() > LIMIT {
            child.kill().ok();
            child.wait().ok();
            panic!("generate {args:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("decode-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[test]
fn bad_flag_value_with_stderr_full() {
    // Refused by the argument parser (exit status 2)…
    let run = generate(
        &["--prompt", "x", "--max-new-tokens", "many"],
        To::Pipe,
        To::Full,
    );
    run.failed_cleanly();
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    // …and by validation, after the model loads.
    let run = generate(
        &["--prompt", "x", "--temperature", "-1"],
        To::Pipe,
        To::Full,
    );
    run.failed_cleanly();
}

#[test]
fn bad_flag_value_says_so_in_one_line() {
    let run = generate(
        &["--prompt", "x", "--temperature", "-1"],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly().says(&["temperature"]);
}

#[test]
fn summary_to_a_full_stderr_fails_the_run() {
    let run = generate(
        &["--prompt", "And God said", "--max-new-tokens", "2"],
        To::Pipe,
        To::Full,
    );
    run.failed_cleanly();
    assert!(run.stdout.starts_with("And God said"), "{}", run.describe());
}

#[test]
fn text_to_a_full_stdout_fails_the_run() {
    let run = generate(
        &["--prompt", "And God said", "--max-new-tokens", "2"],
        To::Full,
        To::Pipe,
    );
    run.failed_cleanly().says(&["<stdout>"]);
    let run = generate(
        &[
            "--prompt",
            "And God said",
            "--max-new-tokens",
            "2",
            "--json",
        ],
        To::Full,
        To::Pipe,
    );
    run.failed_cleanly().says(&["<stdout>"]);
}

#[test]
fn closed_stdout_ends_the_run_with_a_failure() {
    let run = generate(
        &["--prompt", "And God said", "--max-new-tokens", "64"],
        To::Closed,
        To::Pipe,
    );
    run.failed_cleanly().says(&["<stdout>"]);
}

#[test]
fn fifo_as_model_safetensors() {
    let s = Scratch::new("fifo");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("decode-models/tests/fixtures/gpt2-tiny-tied/config.json");
    std::fs::copy(fixture, s.0.join("config.json")).unwrap();
    let fifo = s.0.join("model.safetensors");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo must run");
    assert!(status.success(), "mkfifo {} failed", fifo.display());
    let dir = s.0.to_str().expect("a UTF-8 temporary directory");
    let run = generate(&["--model", dir, "--prompt-ids", "1,2"], To::Pipe, To::Pipe);
    run.failed_cleanly()
        .says(&["model.safetensors", "is a FIFO, not a regular file"]);
}

#[test]
fn huge_draft_tokens_with_auto_schedule_is_refused_at_once() {
    generate_exe(); // built before the clock starts
    let started = Instant::now();
    let run = generate(
        &[
            "--prompt",
            "And God said",
            "--speculative",
            "--draft-schedule",
            "auto",
            "--draft-tokens",
            "100000000",
        ],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly()
        .says(&["draft-tokens", "at most 64", "100000000"]);
    // Refused before a model is loaded, let alone a token generated.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_tokenizer_that_does_not_fit_the_model_is_refused_before_generating() {
    // GPT-2's tokenizer (50257 ids) with the embedded model (4096).
    let gpt2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/gpt2-tokenizer/tokenizer.json");
    let gpt2 = gpt2.to_str().expect("a UTF-8 checkout path");
    let run = generate(
        &["--tokenizer", gpt2, "--prompt", "And God said"],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly()
        .says(&["vocabulary mismatch", "50257", "4096"]);
    assert!(run.stdout.is_empty(), "{}", run.describe());
    // A tokenizer that is not byte-level: the embedded one with a whitespace pre-tokenizer.
    let s = Scratch::new("tokenizer");
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/kjv-target/tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(embedded).unwrap()).unwrap();
    json["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    let path = s.0.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let path = path.to_str().expect("a UTF-8 temporary directory");
    let run = generate(
        &["--tokenizer", path, "--prompt-ids", "1,2"],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly()
        .says(&["tokenizer", "ByteLevel pre-tokenizer"]);
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn an_empty_stop_string_is_refused() {
    let run = generate(
        &["--prompt", "And God said", "--stop", ""],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly().says(&["stop", "empty stop string"]);
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn impossible_request_sizes_print_only_their_error() {
    for (args, needle) in [
        // Would wrap usize when added to the prompt's length.
        (
            vec![
                "--prompt",
                "And God said",
                "--max-new-tokens",
                "18446744073709551615",
            ],
            "context overflow",
        ),
        // Shorter than the prompt: transformers raises too.
        (
            vec!["--prompt", "And God said", "--max-length", "2"],
            "max-length",
        ),
        // Far beyond memory: refused by the estimate, not by an aborted allocation.
        (
            vec![
                "--prompt",
                "And God said",
                "--strategy",
                "sample",
                "--num-return-sequences",
                "100000000000",
            ],
            "GiB",
        ),
        (
            vec![
                "--prompt",
                "And God said",
                "--strategy",
                "beam",
                "--num-beams",
                "100000000000",
            ],
            "GiB",
        ),
    ] {
        let run = generate(&args, To::Pipe, To::Pipe);
        run.failed_cleanly().says(&[needle]);
        assert!(
            run.stdout.is_empty(),
            "printed before refusing: {}",
            run.describe()
        );
    }
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// The generated ids of a successful `--json` run.
fn json_ids(run: &Run) -> Vec<u64> {
    assert!(run.status.success(), "{}", run.describe());
    let out: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert!(out["load"]["seconds"].is_number(), "{}", run.stdout);
    out["sequences"][0]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect()
}

/// llama.cpp's q8_0 GGUF of the embedded model and `--quantize q8_0` of its checkpoint hold the
/// same weights, so they generate the same tokens; the GGUF brings its own tokenizer.
#[test]
fn a_gguf_file_and_load_time_quantization_generate_the_same_text() {
    for format in ["q8_0", "q4_0"] {
        let common = [
            "--prompt",
            "And God said",
            "--max-new-tokens",
            "12",
            "--json",
        ];
        let gguf = repo(&format!("models/gguf/kjv-target-{format}.gguf"));
        let mut from_file = vec!["--model", gguf.as_str()];
        from_file.extend(common);
        let dir = repo("models/kjv-target");
        let mut at_load = vec!["--model", dir.as_str(), "--quantize", format];
        at_load.extend(common);
        let (a, b) = (
            generate(&from_file, To::Pipe, To::Pipe),
            generate(&at_load, To::Pipe, To::Pipe),
        );
        let ids = json_ids(&a);
        assert_eq!(ids.len(), 12);
        assert_eq!(ids, json_ids(&b), "{format}");
    }
}

#[test]
fn quantize_mistakes_are_one_line_errors() {
    let gguf = repo("models/gguf/kjv-target-q8_0.gguf");
    generate(
        &["--model", &gguf, "--quantize", "q4_0", "--prompt", "And"],
        To::Pipe,
        To::Pipe,
    )
    .failed_cleanly()
    .says(&["already quantized to q8_0"]);
    generate(
        &["--quantize", "q3_k", "--prompt", "And"],
        To::Pipe,
        To::Pipe,
    )
    .failed_cleanly()
    .says(&["q3_k"]);
    // Not a GGUF file (nor a directory): named, in one line.
    let scratch = Scratch::new("gguf");
    let bad = scratch.0.join("model.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    generate(
        &["--model", &bad.display().to_string(), "--prompt", "And"],
        To::Pipe,
        To::Pipe,
    )
    .failed_cleanly()
    .says(&["model.gguf"]);
}

/// Environment variables the kernels read are checked before anything runs, and named as they
/// are spelled: an absurd thread count is refused at once (rayon would try to start them all).
#[test]
fn bad_environment_variables_are_named_and_refused_at_once() {
    generate_exe(); // built before the clock starts
    for (name, value, needle) in [
        ("RAYON_NUM_THREADS", "100000", "100000 threads"),
        ("RAYON_NUM_THREADS", "many", "not a number"),
        ("DECODE_SIMD", "bogus", "bogus"),
    ] {
        let started = Instant::now();
        let run = generate_with(
            &["--prompt", "And God said", "--max-new-tokens", "4"],
            Limits {
                env: &[(name, value)],
                ..Limits::default()
            },
        );
        run.failed_cleanly()
            .says(&[&format!("invalid {name}:"), needle]);
        assert!(run.stdout.is_empty(), "{}", run.describe());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}={value} took {:?}",
            started.elapsed()
        );
    }
    // A sane count runs.
    let run = generate_with(
        &["--prompt", "And God said", "--max-new-tokens", "4"],
        Limits {
            env: &[("RAYON_NUM_THREADS", "3")],
            ..Limits::default()
        },
    );
    assert!(run.status.success(), "{}", run.describe());
}

/// Under a 4 GiB address-space limit, requests beyond it are refused by the estimate (what the
/// process may use, not a constant), and one that fits runs: never an aborted allocation.
#[test]
fn requests_are_measured_against_the_address_space_limit() {
    let limit = Limits {
        address_space_kib: Some(4 << 20),
        ..Limits::default()
    };
    for (flags, needle) in [
        (
            ["--strategy", "sample", "--num-return-sequences", "100000"],
            "--num-return-sequences",
        ),
        (
            ["--strategy", "sample", "--num-return-sequences", "20000"],
            "--num-return-sequences",
        ),
        (
            ["--strategy", "beam", "--num-beams", "10000"],
            "--num-beams",
        ),
    ] {
        let mut args = vec!["--prompt", "And God said"];
        args.extend(flags);
        let run = generate_with(&args, Limits { ..limit });
        run.failed_cleanly()
            .says(&[needle, "GiB", "this process may use"]);
        assert!(run.stdout.is_empty(), "{}", run.describe());
    }
    // 5000 sequences passed the old estimate, then aborted (each row's cache had room for 128
    // positions): the cache is now sized to the request, and fits. (A debug build's kernels
    // would take minutes over 5000 rows: it runs 300.)
    let rows = if cfg!(debug_assertions) {
        "300"
    } else {
        "5000"
    };
    let run = generate_with(
        &[
            "--prompt",
            "And God said",
            "--strategy",
            "sample",
            "--num-return-sequences",
            rows,
            "--max-new-tokens",
            "2",
        ],
        Limits { ..limit },
    );
    assert!(run.status.success(), "{}", run.describe());
    assert!(
        run.stdout.lines().any(|l| !l.is_empty()),
        "{}",
        run.describe()
    );
}

/// Non-finite weights end the run at load, before any output, on every way in: a quantized
/// GGUF file whose block scale is NaN (as the model and as the draft), and a checkpoint with an
/// infinite weight quantized at load.
#[test]
fn non_finite_weights_are_refused_before_any_output() {
    let scratch = Scratch::new("non-finite");
    // A q8_0 file with its first tensor's first block scale set to NaN (f16 0x7e00).
    let gguf = std::fs::read(repo("models/gguf/kjv-target-q8_0.gguf")).unwrap();
    let file =
        decode::models::gguf::GgufFile::open(repo("models/gguf/kjv-target-q8_0.gguf")).unwrap();
    let tensor = file
        .tensors()
        .iter()
        .find(|t| t.element_type == decode::models::gguf::ElementType::Q8_0)
        .expect("a q8_0 tensor");
    let mut bad = gguf.clone();
    let at = tensor.offset as usize;
    bad[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    let bad_gguf = scratch.0.join("nan-scale.gguf");
    std::fs::write(&bad_gguf, &bad).unwrap();
    let bad_gguf = bad_gguf.display().to_string();
    let target = repo("models/kjv-target");
    for args in [
        vec!["--model", bad_gguf.as_str(), "--prompt", "And God said"],
        vec![
            "--model",
            target.as_str(),
            "--draft",
            bad_gguf.as_str(),
            "--prompt",
            "And God said",
        ],
    ] {
        let run = generate(&args, To::Pipe, To::Pipe);
        run.failed_cleanly()
            .says(&["non-finite", "nan-scale.gguf", "a block scale of NaN"]);
        assert!(run.stdout.is_empty(), "{}", run.describe());
    }
    // The embedded target with +inf in one weight of its first layer, quantized at load.
    let dir = scratch.0.join("inf-weight");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(Path::new(&target).join(name), dir.join(name)).unwrap();
    }
    let mut st = std::fs::read(Path::new(&target).join("model.safetensors")).unwrap();
    let (start, dtype) = safetensors_data(&st, "transformer.h.0.mlp.c_fc.weight");
    match dtype.as_str() {
        "F16" | "BF16" => st[start..start + 2].copy_from_slice(
            &match dtype.as_str() {
                "F16" => 0x7c00u16,
                _ => 0x7f80,
            }
            .to_le_bytes(),
        ),
        _ => st[start..start + 4].copy_from_slice(&f32::INFINITY.to_le_bytes()),
    }
    std::fs::write(dir.join("model.safetensors"), &st).unwrap();
    let dir = dir.display().to_string();
    for quantize in [None, Some("q8_0"), Some("q4_0")] {
        let mut args = vec!["--model", dir.as_str(), "--prompt", "And God said"];
        if let Some(format) = quantize {
            args.extend(["--quantize", format]);
        }
        let run = generate(&args, To::Pipe, To::Pipe);
        run.failed_cleanly()
            .says(&["non-finite", "h.0.mlp.c_fc.weight", "+inf"]);
        assert!(run.stdout.is_empty(), "{}", run.describe());
    }
}

/// Where tensor `name`'s data starts in a safetensors file, and its dtype.
fn safetensors_data(bytes: &[u8], name: &str) -> (usize, String) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let entry = header
        .get(name)
        .or_else(|| header.get(name.trim_start_matches("transformer.")))
        .unwrap_or_else(|| panic!("{name} is not in the checkpoint"));
    let start = entry["data_offsets"][0].as_u64().unwrap() as usize;
    (
        8 + len + start,
        entry["dtype"].as_str().unwrap().to_string(),
    )
}

/// A GGUF file whose second tensor's data overlaps the first's is refused by name.
#[test]
fn overlapping_gguf_tensors_are_refused() {
    let path = repo("models/gguf/kjv-target-q8_0.gguf");
    let file = decode::models::gguf::GgufFile::open(&path).unwrap();
    let second = &file.tensors()[1];
    let mut bytes = std::fs::read(&path).unwrap();
    // The tensor info ends with its u64 offset, just before the next info (or the padding).
    let name = second.name.as_bytes();
    let at = bytes
        .windows(name.len() + 8)
        .position(|w| w[8..] == *name && w[..8] == (name.len() as u64).to_le_bytes())
        .expect("the tensor's info");
    let offset_at = at + 8 + name.len() + 4 + 8 * second.dims.len() + 4;
    let relative = second.offset - file.data_offset();
    assert_eq!(
        bytes[offset_at..offset_at + 8],
        relative.to_le_bytes(),
        "found the offset field"
    );
    bytes[offset_at..offset_at + 8].copy_from_slice(&0u64.to_le_bytes());
    let scratch = Scratch::new("overlap");
    let bad = scratch.0.join("overlap.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let run = generate(
        &["--model", &bad.display().to_string(), "--prompt", "And"],
        To::Pipe,
        To::Pipe,
    );
    run.failed_cleanly()
        .says(&["overlap.gguf", &second.name, "without overlaps"]);
}
