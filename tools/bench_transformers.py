"""Decode speed of transformers (PyTorch) on the GPT-2-small shape, for the README's comparison.

Same shape, prompt and token count as `cargo bench --bench gpt2` and the generate example:
batch 1, a 32-token prompt, then 64 cached greedy steps, f32, 2 threads.

    python tools/bench_transformers.py [MODEL_DIR] [BATCH]

MODEL_DIR (or -) defaults to a freshly initialised GPT2LMHeadModel (random weights: the speed is the
same as the real checkpoint's). BATCH (default 1) repeats the prompt in that many rows. Prints
prefill milliseconds and decode tokens/s over all rows, twice (the first round warms up).
"""
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(2)
torch.manual_seed(0)
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
if len(sys.argv) > 1 and sys.argv[1] != "-":
    model = GPT2LMHeadModel.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
else:
    model = GPT2LMHeadModel(GPT2Config())
model.eval()
ids = torch.tensor([[i * 1543 % 50257 for i in range(32)]] * batch)
with torch.no_grad():
    for _ in range(2):
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        t1 = time.perf_counter()
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        steps = 64
        t2 = time.perf_counter()
        for _ in range(steps):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t3 = time.perf_counter()
        print(f"torch {torch.__version__}: prefill32 {1e3 * (t1 - t0):.1f} ms, "
              f"decode {batch * steps / (t3 - t2):.1f} tok/s (batch {batch})")
