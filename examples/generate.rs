//! The `decode` command line: generate text with a GPT-2 checkpoint in the HuggingFace layout or
//! a GGUF file written by llama.cpp.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "And God said"          # the embedded model
//! cargo run --release --example generate -- --prompt "And God said" --speculative
//! cargo run --release --example generate -- --model path/to/gpt2 --prompt "Hello" --max-new-tokens 40
//! cargo run --release --example generate -- --model path/to/gpt2 --quantize q8_0 --prompt "Hello"
//! cargo run --release --example generate -- --model gpt2-q8_0.gguf --prompt "Hello"
//! cargo run --release --example generate -- --model path/to/gpt2 --prompt-ids 15496,995 --json
//! ```
//!
//! Without `--json` the text streams to stdout as it is generated and a one-line summary goes to
//! stderr. With `--json`, stdout holds exactly one JSON object (`decode::Output`, plus a `load`
//! object: load seconds, the weights' bytes in memory, and peak resident memory).
//!
//! Nothing here prints with `println!`/`eprintln!`, which panic when a stream is closed or full:
//! a failed write (`| head -c1`, `2>/dev/full`) ends the run with a failure status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use decode::core::{EarlyStopping, GenerationConfig, LanguageModel, files};
use decode::models::backend::Backend;
use decode::models::backend::{self, Cpu};
use decode::models::{Gpt2, Tokenizer};
use decode::samplers::speculative::DraftSchedule;
use decode::{Error, Generator, LoadOptions, Output, Quantization, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Generate text with a GPT-2 model (HuggingFace layout: config.json + model.safetensors; or a
/// GGUF file).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json or vocab.json + merges.txt)
    /// or GGUF file (f32, f16, bf16, q8_0, q4_0) [default: the embedded KJV model,
    /// models/kjv-target].
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Tokenizer: a tokenizer.json file or a directory holding one (default: the model directory,
    /// or a GGUF model's own metadata).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Quantize the weights at load (CPU only; the draft's too).
    #[arg(long, value_enum, value_name = "FORMAT")]
    quantize: Option<QuantizeChoice>,
    /// Prompt text.
    #[arg(
        long,
        value_name = "TEXT",
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids, for example 15496,995.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Tokens to generate (0: only encode the prompt) [default: 32 unless --max-length is given].
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Total length, prompt included (instead of --max-new-tokens).
    #[arg(long, value_name = "N", conflicts_with = "max_new_tokens")]
    max_length: Option<usize>,
    /// End-of-sequence ids stay masked until this many tokens are generated.
    #[arg(long, value_name = "N")]
    min_new_tokens: Option<usize>,
    /// Decoding strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Greedy)]
    strategy: Strategy,
    /// Keep generating after an end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Stop a sequence once its text contains STR (repeatable).
    #[arg(long = "stop", value_name = "STR")]
    stop: Vec<String>,
    /// Seed of the sampling generator (sequence i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences to return (beam search: the best ones, at most --num-beams).
    #[arg(long, value_name = "N", default_value_t = 1)]
    num_return_sequences: usize,
    /// Sampling temperature, > 0 [default: 1, or the model's generation_config.json].
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f64>,
    /// Keep the k most likely tokens, 0 disables [default: 50, as transformers].
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1] [default: 1 = off].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    top_p: Option<f64>,
    /// Remove tokens below P × the top probability, in [0, 1] [default: off].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    min_p: Option<f64>,
    /// Locally typical sampling mass, in (0, 1] [default: 1 = off].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    typical_p: Option<f64>,
    /// transformers' repetition penalty, > 0 [default: 1 = off].
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    repetition_penalty: Option<f64>,
    /// OpenAI frequency penalty over generated tokens, in [-2, 2] [default: 0].
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    frequency_penalty: Option<f64>,
    /// OpenAI presence penalty over generated tokens, in [-2, 2] [default: 0].
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    presence_penalty: Option<f64>,
    /// Never repeat an n-gram of this size [default: 0 = off].
    #[arg(long, value_name = "N")]
    no_repeat_ngram_size: Option<usize>,
    /// Beams for --strategy beam [default: 4].
    #[arg(long, value_name = "N")]
    num_beams: Option<usize>,
    /// Beam scores are divided by length^L [default: 1].
    #[arg(long, value_name = "L", allow_negative_numbers = true)]
    length_penalty: Option<f64>,
    /// When beam search stops: true, false or never [default: false].
    #[arg(long, value_name = "WHEN")]
    early_stopping: Option<String>,
    /// Speculative decoding with this draft model (same vocabulary as --model).
    #[arg(long, value_name = "DIR", conflicts_with = "prompt_lookup")]
    draft: Option<PathBuf>,
    /// Speculative decoding with the embedded draft (models/kjv-draft), for the embedded target.
    #[arg(long, conflicts_with_all = ["draft", "prompt_lookup"])]
    speculative: bool,
    /// Speculative decoding with prompt lookup: match n-grams of at most N tokens in the context.
    #[arg(long, value_name = "N")]
    prompt_lookup: Option<usize>,
    /// Tokens drafted per verify step (the maximum, for --draft-schedule auto) [default: 4; 1 with
    /// --speculative, measured fastest for the small embedded pair].
    #[arg(long, value_name = "GAMMA")]
    draft_tokens: Option<usize>,
    /// How γ changes: constant; heuristic (+2 after a fully accepted draft, −1 otherwise); auto
    /// (maximise the expected speed-up from the measured acceptance rate and cost).
    #[arg(long, value_name = "RULE", default_value = "constant")]
    draft_schedule: String,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// Print one JSON object (ids, text, log-probabilities, stats) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Strategy {
    /// The most likely token at every step.
    Greedy,
    /// Draw from the processed distribution (temperature, top-k, top-p, …).
    Sample,
    /// Beam search (--num-beams, --length-penalty, --early-stopping).
    Beam,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QuantizeChoice {
    /// llama.cpp's q8_0: 8-bit values, one f16 scale per 32 (8.5 bits a weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// llama.cpp's q4_0: 4-bit values, one f16 scale per 32 (4.5 bits a weight).
    #[value(name = "q4_0")]
    Q4_0,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendChoice {
    /// burn-flex on the CPU.
    Cpu,
    /// burn-cuda on NVIDIA GPU 0 (needs a build with `--features cuda`).
    Cuda,
    /// burn-wgpu on the default adapter: Vulkan, Metal or DX12 (needs `--features wgpu`).
    Wgpu,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version (a closed pipe is not an error here)
            let _ = std::io::stdout().write_all(e.to_string().as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            // If even the report cannot be written, the exit status still says it failed.
            let _ = say(&mut std::io::stderr().lock(), first);
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = say(
                &mut std::io::stderr().lock(),
                &format!("error: {}", cli_message(&e)),
            );
            ExitCode::FAILURE
        }
    }
}

/// The error as the command line says it: a setting the library names by its field
/// (`top_p`) is named by its flag (`--top-p`).
fn cli_message(e: &Error) -> String {
    let Error::InvalidParameter { name, message } = e else {
        return e.to_string();
    };
    let flag = match *name {
        "stop_strings" => "stop",
        "gamma" => "draft-tokens",
        "schedule" => "draft-schedule",
        "max_ngram" => "prompt-lookup",
        "eos_token_id" | "banned_tokens" | "bad_words_ids" | "logit_bias"
        | "min_tokens_to_keep" | "prompt" => return e.to_string(),
        // An environment variable, named as it is spelled.
        env if env.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => return e.to_string(),
        other => return format!("invalid --{}: {message}", other.replace('_', "-")),
    };
    format!("invalid --{flag}: {message}")
}

/// Writes `text` and a newline to `stream` (a locked stdout or stderr), flushed: an error instead
/// of `println!`'s panic when the stream is closed or full.
fn say<W: Write + Stream>(stream: &mut W, text: &str) -> Result<()> {
    writeln!(stream, "{text}")
        .and_then(|()| stream.flush())
        .map_err(|e| Error::io(W::NAME, e))
}

/// The name a failed write reports.
trait Stream {
    const NAME: &'static str;
}

impl Stream for std::io::StdoutLock<'_> {
    const NAME: &'static str = "<stdout>";
}

impl Stream for std::io::StderrLock<'_> {
    const NAME: &'static str = "<stderr>";
}

fn run(args: &Args) -> Result<()> {
    // Flags that need no model are checked before loading one.
    let schedule = draft_schedule(args)?;
    // A sampling flag given with another strategy is unused (as transformers ignores sampling
    // values under greedy decoding), but an impossible value given explicitly is still refused,
    // as is an empty stop string (every text contains "").
    GenerationConfig {
        do_sample: true,
        temperature: args.temperature.unwrap_or(1.0),
        top_p: args.top_p.unwrap_or(1.0),
        typical_p: args.typical_p.unwrap_or(1.0),
        min_p: args.min_p,
        stop_strings: args.stop.clone(),
        ..GenerationConfig::default()
    }
    .validate()?;
    match args.backend {
        BackendChoice::Cpu => run_on::<Cpu>(args, schedule, &backend::cpu_device()),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            run_on::<backend::Cuda>(args, schedule, &backend::cuda_device(0)?.burn_device())
        }
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => backend::cuda_device(0).map(|_| ()),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => {
            run_on::<backend::Wgpu>(args, schedule, &backend::wgpu_device()?.burn_device())
        }
        #[cfg(not(feature = "wgpu"))]
        BackendChoice::Wgpu => backend::wgpu_device().map(|_| ()),
    }
}

/// `--draft-schedule` with `--draft-tokens` (validated: γ from 1 to `MAX_DRAFT_TOKENS`).
fn draft_schedule(args: &Args) -> Result<DraftSchedule> {
    let gamma = args
        .draft_tokens
        .unwrap_or(if args.speculative { 1 } else { 4 });
    DraftSchedule::parse(&args.draft_schedule, gamma)
}

fn run_on<B: Backend>(args: &Args, schedule: DraftSchedule, device: &B::Device) -> Result<()> {
    let started = Instant::now();
    let model = load::<B>(&model_dir(args)?, device, args)?;
    let draft_dir = match (&args.draft, args.speculative, &args.model) {
        (Some(dir), _, _) => Some(dir.clone()),
        (None, true, None) => Some(decode::embedded::draft_dir()?),
        (None, true, Some(_)) => {
            return Err(Error::invalid(
                "speculative",
                "uses the embedded draft, which only fits the embedded target: give --draft DIR",
            ));
        }
        (None, false, _) => None,
    };
    let draft = match &draft_dir {
        Some(dir) => Some(load::<B>(dir, device, args)?),
        None => None,
    };
    let load = LoadStats {
        seconds: started.elapsed().as_secs_f64(),
        weight_bytes: model.host_weight_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    generate(model, draft, args, schedule, load)
}

/// What loading cost (the `load` object of `--json`).
#[derive(Serialize)]
struct LoadStats {
    /// Wall time to load the model (and the draft), in seconds.
    seconds: f64,
    /// Bytes the target's weights take in memory as the kernels read them (host path only).
    weight_bytes: Option<usize>,
    /// Peak resident memory of the process once loaded (Linux's VmHWM), in bytes.
    peak_rss_bytes: Option<u64>,
}

/// Peak resident memory so far, from `/proc/self/status` (Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `--model`, or the embedded target.
fn model_dir(args: &Args) -> Result<PathBuf> {
    match &args.model {
        Some(dir) => Ok(dir.clone()),
        None => decode::embedded::target_dir(),
    }
}

/// Loads a model (a directory or a GGUF file), with a progress bar on stderr for large files
/// (when stderr is a terminal).
fn load<B: Backend>(path: &Path, device: &B::Device, args: &Args) -> Result<Gpt2<B>> {
    let bar = ProgressBar::hidden();
    let weights = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let size = std::fs::metadata(weights).map_or(0, |m| m.len());
    if size > 64 << 20 {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_length(size);
        bar.set_style(
            ProgressStyle::with_template("loading {msg} {bar:30} {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(path.display().to_string());
    }
    let options = LoadOptions {
        quantize: args.quantize.map(|q| match q {
            QuantizeChoice::Q8_0 => Quantization::Q8_0,
            QuantizeChoice::Q4_0 => Quantization::Q4_0,
        }),
        ..LoadOptions::default()
    };
    let model =
        Gpt2::<B>::load_with_progress(path, device, options, &mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    model
}

fn load_tokenizer(args: &Args) -> Result<Option<Tokenizer>> {
    let model = model_dir(args)?;
    let path = args.tokenizer.as_deref().unwrap_or(&model);
    // Present but not regular (a FIFO, /dev/zero) is read, and refused, rather than skipped.
    let has_files = |dir: &Path| {
        files::is_present(&dir.join("tokenizer.json")) || files::is_present(&dir.join("vocab.json"))
    };
    match path {
        // A GGUF model carries its tokenizer.
        file if args.tokenizer.is_none() && file.is_file() => Tokenizer::for_model(file).map(Some),
        file if files::is_present(file) && !file.is_dir() => Tokenizer::from_file(file).map(Some),
        dir if has_files(dir) => Tokenizer::from_dir(dir).map(Some),
        // Ids in, ids out: a model without tokenizer files still runs with --prompt-ids.
        _ if args.prompt.is_none() && args.tokenizer.is_none() => Ok(None),
        other => Err(Error::io(
            other.join("tokenizer.json"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no tokenizer found (give --tokenizer)",
            ),
        )),
    }
}

/// The generation settings: the model's generation_config.json, then the flags given.
fn generation_config(args: &Args) -> Result<GenerationConfig> {
    let mut c = GenerationConfig::for_model_dir(model_dir(args)?)?;
    c.max_new_tokens = match (args.max_new_tokens, args.max_length) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(32),
    };
    let set = |field: &mut f64, flag: Option<f64>| {
        if let Some(v) = flag {
            *field = v;
        }
    };
    set(&mut c.temperature, args.temperature);
    set(&mut c.top_p, args.top_p);
    set(&mut c.typical_p, args.typical_p);
    set(&mut c.repetition_penalty, args.repetition_penalty);
    set(&mut c.frequency_penalty, args.frequency_penalty);
    set(&mut c.presence_penalty, args.presence_penalty);
    set(&mut c.length_penalty, args.length_penalty);
    c.max_length = args.max_length.unwrap_or(c.max_length);
    c.min_new_tokens = args.min_new_tokens.unwrap_or(c.min_new_tokens);
    c.min_p = args.min_p.or(c.min_p);
    c.top_k = args.top_k.unwrap_or(c.top_k);
    c.no_repeat_ngram_size = args.no_repeat_ngram_size.unwrap_or(c.no_repeat_ngram_size);
    c.ignore_eos |= args.ignore_eos;
    c.stop_strings.extend(args.stop.iter().cloned());
    c.seed = args.seed;
    c.num_return_sequences = args.num_return_sequences;
    c.do_sample = args.strategy == Strategy::Sample;
    c.num_beams = match args.strategy {
        Strategy::Beam => args.num_beams.unwrap_or(4),
        _ => 1,
    };
    if let Some(when) = &args.early_stopping {
        c.early_stopping = match when.as_str() {
            "true" => EarlyStopping::Flag(true),
            "false" => EarlyStopping::Flag(false),
            "never" => EarlyStopping::Never,
            other => {
                return Err(Error::invalid(
                    "early-stopping",
                    format!("must be true, false or never, not {other:?}"),
                ));
            }
        };
    }
    c.validate()?;
    Ok(c)
}

fn generate<M: LanguageModel>(
    model: M,
    draft: Option<M>,
    args: &Args,
    schedule: DraftSchedule,
    load: LoadStats,
) -> Result<()> {
    let config = generation_config(args)?;
    let tokenizer = load_tokenizer(args)?;
    // Checks the tokenizer against the model before the prompt is encoded: a tokenizer that does
    // not fit (another vocabulary, gaps in its ids, not byte-level) would print garbage.
    let mut generator = Generator::new(model, tokenizer)?
        .with_config(config)?
        .with_schedule(schedule)?;
    generator = match (draft, args.prompt_lookup) {
        (Some(draft), _) => generator.with_draft(draft)?,
        (None, Some(0)) => return Err(Error::invalid("prompt-lookup", "must be at least 1")),
        (None, Some(n)) => generator.with_prompt_lookup(n)?,
        (None, None) => generator,
    };
    let tokenizer = generator.tokenizer();
    let prompt = match (&args.prompt, &args.prompt_ids, tokenizer) {
        (Some(text), _, Some(tokenizer)) => tokenizer.encode(text)?,
        (_, Some(ids), _) => ids.clone(),
        _ => {
            return Err(Error::invalid(
                "prompt",
                "give --prompt TEXT or --prompt-ids IDS",
            ));
        }
    };
    // Starting the stream checks the whole request (context, memory, token ids) before the
    // prompt is echoed: a refused request prints nothing but its one-line error.
    let mut stream = generator.stream_ids(&prompt)?;
    let config = generator.config();
    // Text streams to stdout only when there is one sequence to show.
    let streaming = !args.json && config.num_return_sequences == 1 && config.num_beams == 1;
    let mut stdout = std::io::stdout().lock();
    if streaming && let Some(tokenizer) = tokenizer {
        write_text(&mut stdout, &tokenizer.decode(&prompt)?)?;
    }
    if streaming {
        for delta in &mut stream {
            let delta = delta?;
            let text = match tokenizer {
                Some(_) => delta.text,
                None => format!(" {}", delta.token),
            };
            write_text(&mut stdout, &text)?;
        }
    }
    let output = stream
        .finish()?
        .pop()
        .ok_or_else(|| Error::Shape("generation returned no output".into()))?;
    if args.json {
        return print_json(&output, &load);
    }
    if !streaming {
        for (i, seq) in output.sequences.iter().enumerate() {
            let text = match tokenizer {
                Some(t) => t.decode(&prompt)? + &seq.text,
                None => format!("{:?}", seq.ids),
            };
            let score = seq
                .score
                .map(|s| format!(" (score {s:.4})"))
                .unwrap_or_default();
            write_text(&mut stdout, &format!("--- sequence {i}{score}\n{text}\n"))?;
        }
    } else {
        say(&mut stdout, "")?;
    }
    let s = &output.stats;
    let speculative = s
        .speculative
        .as_ref()
        .map(|sp| {
            format!(
                ", acceptance {:.0}%, {:.2} accepted per verify step, {} draft calls",
                sp.acceptance_rate * 100.0,
                sp.mean_accepted,
                sp.draft_forward_calls
            )
        })
        .unwrap_or_default();
    say(
        &mut std::io::stderr().lock(),
        &format!(
            "{} new tokens, prefill {:.1} ms, decode {:.1} tok/s, {} target calls{speculative}",
            s.new_tokens,
            s.prefill_seconds * 1e3,
            s.tokens_per_second,
            s.target_forward_calls
        ),
    )
}

fn write_text(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("<stdout>", e))
}

fn print_json(output: &Output, load: &LoadStats) -> Result<()> {
    let json_error = |e: serde_json::Error| Error::Unsupported(format!("cannot write JSON: {e}"));
    let mut value = serde_json::to_value(output).map_err(json_error)?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert(
            "load".into(),
            serde_json::to_value(load).map_err(json_error)?,
        );
    }
    let text = serde_json::to_string(&value).map_err(json_error)?;
    say(&mut std::io::stdout().lock(), &text)
}
