#!/usr/bin/env python3
"""Save a random-weight GPT-2 small (124M) as a HuggingFace folder, for speed benchmarks.

What: GPT2LMHeadModel(GPT2Config()) (12 layers, n_embd 768, 12 heads, 1024 positions, vocab
  50257, tied lm_head), initialised with torch.manual_seed(0), saved with
  save_pretrained(safe_serialization=True) (config.json, generation_config.json,
  model.safetensors), plus GPT-2's tokenizer files (vocab.json, merges.txt, tokenizer.json) copied
  from assets/gpt2-tokenizer/.
Why: benchmarks of decode against llama.cpp / transformers need GPT-2-small-sized weights, and the
  real ones cannot be downloaded here. Speed does not depend on the weight values (the
  outputs are meaningless text). Convert it with
  `tools/llama_cpp.sh convert OUT_DIR OUT.gguf f32|f16|q8_0|q4_0`.
How: python tools/make_random_gpt2.py OUT_DIR [--dtype float32|float16]   (needs torch,
  transformers, safetensors; about 10 s). Same versions and seed give the same file.
"""
import argparse
import shutil
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "gpt2-tokenizer"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    model = model.to(getattr(torch, args.dtype))
    model.save_pretrained(args.out, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        shutil.copy(ASSETS / name, args.out / name)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: GPT-2 small, {n:,} parameters, {args.dtype}")


if __name__ == "__main__":
    main()
