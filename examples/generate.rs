//! The `decode` command line: generate text with a GPT-2 checkpoint in the HuggingFace layout.
//!
//! ```text
//! cargo run --release --example generate -- --model path/to/gpt2 --prompt "Hello" --max-new-tokens 40
//! cargo run --release --example generate -- --model path/to/gpt2 --prompt-ids 15496,995 --json
//! ```
//!
//! Without `--json` the text streams to stdout as it is generated and a one-line summary goes to
//! stderr. With `--json`, stdout holds exactly one JSON object (see `JsonOutput`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use decode::core::{GenerationOutput, GenerationStats, LanguageModel};
use decode::models::backend::{self, Cpu};
use decode::models::{Gpt2, Tokenizer};
use decode::{Error, Result};
use serde::Serialize;

/// Generate text with a GPT-2 model (HuggingFace layout: config.json + model.safetensors).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json or vocab.json + merges.txt).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Tokenizer: a tokenizer.json file or a directory holding one (default: the model directory).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
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
    /// Tokens to generate (0: only encode the prompt).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_new_tokens: usize,
    /// Decoding strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Greedy)]
    strategy: Strategy,
    /// Keep generating after an end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// Print one JSON object (ids, text, log-probabilities, stats) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Strategy {
    /// The most likely token at every step.
    Greedy,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendChoice {
    /// burn-flex on the CPU.
    Cpu,
    /// burn-cuda on NVIDIA GPU 0 (needs a build with `--features cuda`).
    Cuda,
}

/// The `--json` output. Later flags add fields; existing ones keep their meaning.
#[derive(Serialize)]
struct JsonOutput<'a> {
    prompt_ids: &'a [u32],
    sequences: Vec<JsonSequence<'a>>,
    stats: &'a GenerationStats,
}

#[derive(Serialize)]
struct JsonSequence<'a> {
    /// Generated ids only; ends with the EOS id when generation stopped on it.
    ids: &'a [u32],
    text: String,
    /// log-softmax of the model's raw logits at each chosen id.
    logprobs: &'a [f32],
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    match args.backend {
        BackendChoice::Cpu => generate(
            &Gpt2::<Cpu>::load(&args.model, &backend::cpu_device())?,
            args,
        ),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            let device = backend::cuda_device(0)?;
            generate(&Gpt2::<backend::Cuda>::load(&args.model, &device)?, args)
        }
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => backend::cuda_device(0).map(|_| ()),
    }
}

fn load_tokenizer(args: &Args) -> Result<Option<Tokenizer>> {
    let path = args.tokenizer.as_deref().unwrap_or(&args.model);
    let has_files =
        |dir: &Path| dir.join("tokenizer.json").is_file() || dir.join("vocab.json").is_file();
    match path {
        file if file.is_file() => Tokenizer::from_file(file).map(Some),
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

fn generate<M: LanguageModel>(model: &M, args: &Args) -> Result<()> {
    let tokenizer = load_tokenizer(args)?;
    let prompt = match (&args.prompt, &args.prompt_ids, &tokenizer) {
        (Some(text), _, Some(tokenizer)) => tokenizer.encode(text)?,
        (_, Some(ids), _) => ids.clone(),
        _ => {
            return Err(Error::invalid(
                "prompt",
                "give --prompt TEXT or --prompt-ids IDS",
            ));
        }
    };
    let Strategy::Greedy = args.strategy;
    let mut stream = tokenizer.as_ref().map(Tokenizer::stream);
    let mut stdout = std::io::stdout().lock();
    if !args.json
        && let Some(tokenizer) = &tokenizer
    {
        write_text(&mut stdout, &tokenizer.decode(&prompt)?)?;
    }
    let mut stream_error = None;
    let output =
        decode::core::greedy(model, &prompt, args.max_new_tokens, args.ignore_eos, |id| {
            if args.json {
                return;
            }
            let piece = match stream.as_mut() {
                Some(stream) => stream.push(id),
                None => Ok(format!(" {id}")),
            };
            if let Err(e) = piece.and_then(|p| write_text(&mut stdout, &p)) {
                stream_error.get_or_insert(e);
            }
        })?;
    if let Some(e) = stream_error {
        return Err(e);
    }
    if args.json {
        print_json(&output, tokenizer.as_ref())
    } else {
        if let Some(stream) = stream.as_mut() {
            write_text(&mut stdout, &stream.finish())?;
        }
        writeln!(stdout).map_err(|e| Error::io("stdout", e))?;
        let s = &output.stats;
        eprintln!(
            "{} new tokens, prefill {:.1} ms, decode {:.1} tok/s, {} forward calls",
            s.new_tokens,
            s.prefill_seconds * 1e3,
            s.tokens_per_second,
            s.target_forward_calls
        );
        Ok(())
    }
}

fn write_text(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("stdout", e))
}

fn print_json(output: &GenerationOutput, tokenizer: Option<&Tokenizer>) -> Result<()> {
    let sequences = output
        .sequences
        .iter()
        .map(|s| {
            let text = match tokenizer {
                Some(t) => t.decode(&s.ids)?,
                None => String::new(),
            };
            Ok(JsonSequence {
                ids: &s.ids,
                text,
                logprobs: &s.logprobs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let json = JsonOutput {
        prompt_ids: &output.prompt_ids,
        sequences,
        stats: &output.stats,
    };
    let text = serde_json::to_string(&json)
        .map_err(|e| Error::Unsupported(format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
