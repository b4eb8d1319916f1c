"""decode and llama.cpp side by side, interleaved, on the same GGUF files: the README's CPU table.

For each round and each weight type (f32, f16, q8_0, q4_0), alternating which program runs first:
  llama.cpp  llama-bench -t 2 -p 32,512 -n 64            (prefill 32 / 512, decode at batch 1)
             llama-batched-bench -t 2 -npp 32 -ntg 64 -npl 8  (8 sequences decoded together)
  decode     generate --json on the same file: a 32-token prompt then 64 greedy tokens; a
             512-token prompt; 8 sequences of the 32-token prompt (--strategy sample
             --num-return-sequences 8), 64 tokens each
Then speculative decoding on the embedded KJV pair, f32 (stored f16) and --quantize q8_0.
Prints the machine (CPU, SIMD flags, cores, load) and markdown tables: each cell is the median of
the rounds, with their range when they differ.

    tools/llama_cpp.sh setup                       # builds llama.cpp in /tmp/llama
    python tools/make_random_gpt2.py /tmp/gpt2-random
    for t in f32 f16 q8_0 q4_0; do tools/llama_cpp.sh convert /tmp/gpt2-random /tmp/gguf/gpt2-$t.gguf $t; done
    cargo build --release --example generate
    python tools/bench_side_by_side.py [--rounds 3] [--llama-bin DIR] [--gguf-dir /tmp/gguf]
        [--types f32,f16,q8_0,q4_0] [--simd avx2 --llama-bin .../build-avx2/bin]

On a VM whose CPU reports AMX it cannot run, llama.cpp's native build dies on its first
product: compare with `NO_AMX=1 tools/llama_cpp.sh setup` and `--llama-bin .../build-noamx/bin`.

Only the standard library; run it on an otherwise idle machine (it reports the load it saw).
"""
import argparse
import json
import os
import subprocess
import sys
import time

TYPES = ["f32", "f16", "q8_0", "q4_0"]
PROMPT32 = [i * 1543 % 50257 for i in range(32)]
PROMPT512 = [i * 1543 % 50257 for i in range(512)]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def peak_rss_mb(cmd):
    """The whole run's peak resident memory (GNU time's %M), in MB."""
    out = subprocess.run(["/usr/bin/time", "-f", "RSS %M", *cmd], capture_output=True, text=True)
    line = [l for l in out.stderr.splitlines() if l.startswith("RSS ")][-1]
    return int(line.split()[1]) * 1024 / 1e6


def llama(bin_dir, gguf):
    cells = {}
    bench = run([f"{bin_dir}/llama-bench", "-m", gguf, "-t", "2", "-p", "32,512", "-n", "64",
                 "-r", "1", "-o", "jsonl"])
    for line in bench.splitlines():
        r = json.loads(line)
        if r["n_gen"] == 64:
            cells["decode"] = r["avg_ts"]
        elif r["n_prompt"] == 32:
            cells["prefill32"] = r["avg_ts"]
        elif r["n_prompt"] == 512:
            cells["prefill512"] = r["avg_ts"]
    batched = run([f"{bin_dir}/llama-batched-bench", "-m", gguf, "-t", "2", "-c", "2048",
                   "-npp", "32", "-ntg", "64", "-npl", "8"])
    for line in batched.splitlines():
        f = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(f) >= 8 and f[2] == "8":
            cells["batch8"] = float(f[7])  # S_TG t/s, all sequences
    return cells


def decode(generate, gguf):
    def gen(prompt, *extra):
        out = run([generate, "--model", gguf, "--prompt-ids", ",".join(map(str, prompt)),
                   "--ignore-eos", "--json", *extra])
        return json.loads(out)

    one = gen(PROMPT32, "--max-new-tokens", "64")
    long = gen(PROMPT512, "--max-new-tokens", "1")
    eight = gen(PROMPT32, "--max-new-tokens", "64", "--strategy", "sample",
                "--num-return-sequences", "8")
    return {
        "decode": one["stats"]["tokens_per_second"],
        "prefill32": 32 / one["stats"]["prefill_seconds"],
        "prefill512": 512 / long["stats"]["prefill_seconds"],
        "batch8": eight["stats"]["tokens_per_second"],
        "rss": one["load"]["peak_rss_bytes"],
        "weights": one["load"]["weight_bytes"],
        "load": one["load"]["seconds"],
    }


def speculative(generate):
    """The embedded KJV pair: plain greedy vs speculative, stored weights vs both quantized."""
    rows = {}
    for label, quant in [("stored f16, computed f32", []), ("q8_0 target and draft",
                                                             ["--quantize", "q8_0"])]:
        for mode, extra in [("greedy", []), ("speculative", ["--speculative"])]:
            out = json.loads(run([generate, "--prompt", "And God said", "--max-new-tokens", "200",
                                  "--ignore-eos", "--json", *quant, *extra]))
            s = out["stats"]
            acc = (s.get("speculative") or s).get("acceptance_rate")
            rows.setdefault((label, mode), []).append((s["tokens_per_second"], acc))
    return rows


def machine():
    lscpu = run(["lscpu"])
    name = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines()
                 if l.startswith("Model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in lscpu.splitlines()
                  if l.startswith("Flags")), [])
    simd = [f for f in ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx_vnni", "avx512_bf16"] if f in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(simd)}"


def span(values, digits=0):
    """The median, then the range when the rounds differ: a noisy round shows, and misleads less."""
    fmt = f"{{:.{digits}f}}".format
    lo, hi, mid = min(values), max(values), sorted(values)[len(values) // 2]
    return fmt(mid) if fmt(lo) == fmt(hi) else f"{fmt(mid)} ({fmt(lo)}–{fmt(hi)})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--llama-bin",
                   default="/tmp/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")
    p.add_argument("--gguf-dir", default="/tmp/gguf")
    p.add_argument("--generate", default="target/release/examples/generate")
    p.add_argument("--simd", choices=["avx512", "avx2", "portable"],
                   help="cap decode's kernels (DECODE_SIMD); pair avx2 with llama.cpp's "
                        "build-avx2 (AVX2_ONLY=1 tools/llama_cpp.sh setup)")
    p.add_argument("--skip-speculative", action="store_true")
    p.add_argument("--types", default=",".join(TYPES),
                   help="weight types to compare, comma-separated (default: all four)")
    a = p.parse_args()
    types = a.types.split(",")
    if not set(types) <= set(TYPES):
        sys.exit(f"--types: each of {types} must be one of {TYPES}")
    if a.simd:
        os.environ["DECODE_SIMD"] = a.simd
    print(f"decode kernels capped at: {a.simd or 'none (the best the CPU has)'}; "
          f"llama.cpp: {a.llama_bin}")
    print(f"machine: {machine()}; load before: {open('/proc/loadavg').read().split()[:3]}")
    results = {(who, t): [] for who in ["llama.cpp", "decode"] for t in types}
    for r in range(a.rounds):
        for t in types:
            gguf = f"{a.gguf_dir}/gpt2-{t}.gguf"
            order = [("llama.cpp", lambda: llama(a.llama_bin, gguf)),
                     ("decode", lambda: decode(a.generate, gguf))]
            if r % 2:
                order.reverse()
            for who, f in order:
                results[(who, t)].append(f())
        print(f"round {r + 1} done, load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    print("\n| weights | program | decode, batch 1 (tok/s) | prefill 32 (tok/s) | "
          "prefill 512 (tok/s) | batch 8 decode (tok/s, all rows) |")
    print("|---|---|---|---|---|---|")
    for t in types:
        for who in ["decode", "llama.cpp"]:
            cells = results[(who, t)]
            row = [span([c[k] for c in cells]) for k in ["decode", "prefill32", "prefill512",
                                                          "batch8"]]
            print(f"| {t} | {who} | " + " | ".join(row) + " |")
    print("\n| weights | file (MB) | decode: weights in memory (MB) | decode: peak RSS once loaded "
          "(MB) | RSS / weights | decode: load (s) | whole run's peak RSS (MB), decode / llama.cpp |")
    print("|---|---|---|---|---|---|---|")
    prompt = ",".join(map(str, PROMPT32))
    for t in types:
        gguf = f"{a.gguf_dir}/gpt2-{t}.gguf"
        cells = results[("decode", t)]
        size = os.path.getsize(gguf) / 1e6
        w, rss = cells[0]["weights"] / 1e6, min(c["rss"] for c in cells) / 1e6
        ours = peak_rss_mb([a.generate, "--model", gguf, "--prompt-ids", prompt,
                            "--max-new-tokens", "64", "--ignore-eos", "--json"])
        theirs = peak_rss_mb([f"{a.llama_bin}/llama-bench", "-m", gguf, "-t", "2", "-p", "32",
                              "-n", "64", "-r", "1"])
        print(f"| {t} | {size:.0f} | {w:.0f} | {rss:.0f} | {rss / w:.3f} | "
              f"{span([c['load'] for c in cells], 2)} | {ours:.0f} / {theirs:.0f} |")
    spec = {}
    for _ in range(0 if a.skip_speculative else a.rounds):
        for k, v in speculative(a.generate).items():
            spec.setdefault(k, []).extend(v)
    print("\n| embedded KJV pair | greedy (tok/s) | speculative (tok/s) | acceptance |")
    print("|---|---|---|---|")
    for label in [] if a.skip_speculative else ["stored f16, computed f32",
                                                 "q8_0 target and draft"]:
        g = [t for t, _ in spec[(label, "greedy")]]
        sp = [t for t, _ in spec[(label, "speculative")]]
        acc = [x for _, x in spec[(label, "speculative")] if x is not None]
        print(f"| {label} | {span(g)} | {span(sp)} | {span(acc, 3) if acc else '—'} |")
    print(f"\nload after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
