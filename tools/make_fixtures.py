#!/usr/bin/env python3
"""Make the GPT-2 test fixtures of decode-models (small random checkpoints + reference outputs).

What it makes, under decode-models/tests/fixtures/:

  gpt2-tiny-tied/        vocab 211, n_positions 40, n_embd 60, 3 layers, 5 heads, n_inner 100,
                         eps 1e-5, bos/eos 210, tied lm_head; f32, written by
                         model.save_pretrained(safe_serialization=True) (keys "transformer.*",
                         lm_head.weight omitted because tied).
  gpt2-tiny-f16-untied/  vocab 173, n_positions 48, n_embd 36, 2 layers, 4 heads, n_inner None
                         (=4*n_embd), eps 1e-3, bos/eos 172, untied lm_head; f16, keys WITHOUT the
                         "transformer." prefix (like openai-community/gpt2's file: "wte.weight",
                         "h.0.attn.c_attn.weight", ..., "ln_f.weight", "lm_head.weight"), plus the
                         causal-mask buffers "h.N.attn.bias" [1,1,n_positions,n_positions] that a
                         loader must ignore.
  gpt2-tiny-bf16/        vocab 150, n_positions 32, n_embd 32, 1 layer, 2 heads, n_inner 72,
                         eps 1e-5, eos 149, tied, scale_attn_weights=False; bf16, keys
                         "transformer.*" (save_pretrained of the bf16 model).

  Each folder holds config.json, model.safetensors, generation_config.json and reference.json.
  Every parameter is re-randomised after construction (nothing is left at HF's default init):
  matrices ~ N(0, 0.2), wte/wpe ~ N(0, 0.1), all biases ~ N(0, 0.1),
  LayerNorm weights ~ 1 + N(0, 0.2), LayerNorm biases ~ N(0, 0.1).
  For the f16/bf16 models the reference is computed in f32 from the weights rounded to the stored
  dtype and back, i.e. what a loader that upcasts to f32 computes.  All references use
  attn_implementation="eager" (the plain matmul/softmax path) on CPU, in f32.

  reference.json keys:
    model, dtype ("f32"|"f16"|"bf16"), prompts (3 prompts of lengths 1, 7, 13; no eos id),
    full_logits[prompt][position][vocab]    one forward of the whole prompt,
    cached[{prompt_index, prefix_len, logits}]   prefill prompt[:k] (k = len//2, >= 1), then one
                                            token at a time with past_key_values; rows are the
                                            logits at positions k-1 .. len-1,
    batch_left_padded{prompts, pad_id, last_logits}   the 3 prompts in one left-padded batch with
                                            attention_mask and position_ids =
                                            (mask.cumsum(-1) - 1).clamp(min=0); last_logits[i] is
                                            prompt i's last real position,
    greedy[{prompt_index, max_new_tokens, new_ids, logprobs}]   model.generate(do_sample=False,
                                            eos_token_id=eos, pad_token_id=eos); new_ids are only
                                            the generated ids (eos included if it stopped on it);
                                            logprobs = log_softmax(raw logits)[chosen id] per step.
                                            gpt2-tiny-tied has a 4th entry that stops on eos early:
                                            prompt_index null and an extra "prompt" field.
  Floats are the exact float32 values, written as JSON numbers (Python's repr of the double).

  tokenizer_cases.json   [{"text", "ids"}] for hard strings, encoded with the real GPT-2 tokenizer
                         files of assets/gpt2-tokenizer (or $GPT2_TOKENIZER_DIR) by
                         three implementations that must agree: transformers GPT2TokenizerFast
                         from vocab.json+merges.txt, GPT2TokenizerFast from tokenizer.json, and
                         tiktoken built from vocab.json.  "<|endoftext|>" inside text is the special
                         token 50256, as transformers does by default (tiktoken:
                         allowed_special="all").  Skipped with a message if the folder is absent.

How to run (from the repository root):

    pip install -r tools/requirements.txt && python tools/make_fixtures.py

The output is deterministic (fixed seeds, one CPU thread, eager attention).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "decode-models" / "tests" / "fixtures"
TOK_DIR = Path(os.environ.get("GPT2_TOKENIZER_DIR", REPO / "assets" / "gpt2-tokenizer"))

PROMPT_LENS = [1, 7, 13]
GREEDY_NEW = {1: 16, 7: 16, 13: 12}
# A greedy step whose top-2 logits are closer than this is treated as a near tie (an f32
# implementation could legitimately pick the other token), and the prompt is redrawn.
MIN_MARGIN = 1e-3

MODELS = [
    dict(
        name="gpt2-tiny-tied", dtype="f32", seed=1001,
        config=dict(vocab_size=211, n_positions=40, n_embd=60, n_layer=3, n_head=5, n_inner=100,
                    layer_norm_epsilon=1e-5, bos_token_id=210, eos_token_id=210,
                    tie_word_embeddings=True),
    ),
    dict(
        name="gpt2-tiny-f16-untied", dtype="f16", seed=2002,
        config=dict(vocab_size=173, n_positions=48, n_embd=36, n_layer=2, n_head=4, n_inner=None,
                    layer_norm_epsilon=1e-3, bos_token_id=172, eos_token_id=172,
                    tie_word_embeddings=False),
    ),
    dict(
        name="gpt2-tiny-bf16", dtype="bf16", seed=3003,
        config=dict(vocab_size=150, n_positions=32, n_embd=32, n_layer=1, n_head=2, n_inner=72,
                    layer_norm_epsilon=1e-5, bos_token_id=149, eos_token_id=149,
                    tie_word_embeddings=True, scale_attn_weights=False),
    ),
]
TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def rows(t):
    """Exact float32 values as nested Python floats."""
    assert t.dtype == torch.float32
    return t.detach().cpu().tolist()


def randomise(model, gen):
    """Re-draw every parameter so that nothing is at HF's default initialisation."""
    for name, p in model.named_parameters():
        with torch.no_grad():
            noise = lambda std: torch.randn(p.shape, generator=gen) * std  # noqa: E731
            leaf = name.split(".")[-1]
            is_ln = ".ln_" in name or name.startswith("ln_") or "ln_f" in name
            if is_ln and leaf == "weight":
                p.copy_(1.0 + noise(0.2))
            elif leaf == "bias":
                p.copy_(noise(0.1))
            elif name.endswith("wte.weight") or name.endswith("wpe.weight"):
                p.copy_(noise(0.1))
            else:  # c_attn / c_proj / c_fc matrices and an untied lm_head
                p.copy_(noise(0.2))


def round_trip(model, dtype):
    """Round every parameter to dtype and back to f32 (in place)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def build(spec):
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = GPT2Config(**spec["config"])
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).eval()
    assert model.config._attn_implementation == "eager"
    assert type(model.transformer.h[0].attn).__name__ == "GPT2Attention"
    randomise(model, gen)
    if not cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
        assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    else:
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    if spec["dtype"] != "f32":
        round_trip(model, TORCH_DTYPE[spec["dtype"]])
    return model, gen


def save(model, spec, folder):
    folder.mkdir(parents=True, exist_ok=True)
    dtype = spec["dtype"]
    cfg = model.config
    if spec["name"] == "gpt2-tiny-f16-untied":
        # Original-gpt2-style file: no "transformer." prefix, f16, with attn.bias mask buffers.
        tensors = {}
        for k, v in model.transformer.state_dict().items():
            tensors[k] = v.detach().to(torch.float16).contiguous().clone()
        tensors["lm_head.weight"] = model.lm_head.weight.detach().to(torch.float16).contiguous().clone()
        n = cfg.n_positions
        mask = torch.tril(torch.ones(n, n, dtype=torch.float16)).view(1, 1, n, n)
        for i in range(cfg.n_layer):
            assert f"h.{i}.attn.bias" not in tensors
            tensors[f"h.{i}.attn.bias"] = mask.clone()
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        out_cfg = GPT2Config(**spec["config"])  # fresh: no runtime-only fields
        out_cfg.architectures = ["GPT2LMHeadModel"]
        out_cfg.torch_dtype = torch.float16
        out_cfg.save_pretrained(str(folder))
        model.generation_config.save_pretrained(str(folder))
    else:
        m = model
        if dtype != "f32":
            m = GPT2LMHeadModel(cfg).eval()
            m.load_state_dict(model.state_dict())
            m = m.to(TORCH_DTYPE[dtype])
        m.save_pretrained(str(folder), safe_serialization=True)
        cfg.torch_dtype = torch.float32  # the in-memory reference model stays f32
    # Sanity: what is loaded back from the folder gives bit-identical weights.
    if spec["name"] == "gpt2-tiny-f16-untied":
        # transformers' from_pretrained rejects this layout (unprefixed base keys next to
        # "lm_head.weight": "state dictionary ... corrupted"), so map the keys by hand.
        from safetensors.torch import load_file
        raw = load_file(str(folder / "model.safetensors"))
        assert all(v.dtype == torch.float16 for v in raw.values())
        sd = {(k if k.startswith("lm_head.") else "transformer." + k): v.float()
              for k, v in raw.items() if not k.endswith(".attn.bias")}
        loaded = GPT2LMHeadModel(cfg).eval()
        loaded.load_state_dict(sd, strict=True)
    else:
        loaded = GPT2LMHeadModel.from_pretrained(str(folder), torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ref_sd = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), f"{spec['name']}: {k} differs after reload"
    return loaded


def margin(logits_row):
    top = torch.topk(logits_row, 2).values
    return float(top[0] - top[1])


@torch.no_grad()
def greedy(model, prompt, m, eos):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=m, eos_token_id=eos, pad_token_id=eos,
                         output_scores=False, output_logits=True, return_dict_in_generate=True)
    new_ids = out.sequences[0, len(prompt):].tolist()
    assert len(out.logits) == len(new_ids)
    logprobs, min_margin = [], float("inf")
    for step, tok in zip(out.logits, new_ids):
        row = step[0].float()
        assert int(row.argmax()) == tok
        min_margin = min(min_margin, margin(row))
        logprobs.append(float(torch.log_softmax(row, dim=-1)[tok]))
    return new_ids, logprobs, min_margin


@torch.no_grad()
def references(model, spec, gen):
    cfg = model.config
    vocab, eos, npos = cfg.vocab_size, cfg.eos_token_id, cfg.n_positions
    assert eos == vocab - 1

    # Prompts: random ids in [0, vocab - 1) (never eos); redraw on a near tie in greedy decoding.
    prompts, greedy_out = [], []
    for i, n in enumerate(PROMPT_LENS):
        m = min(GREEDY_NEW[n], npos - n)
        for _attempt in range(100):
            p = torch.randint(0, vocab - 1, (n,), generator=gen).tolist()
            new_ids, logprobs, mm = greedy(model, p, m, eos)
            if mm >= MIN_MARGIN:
                break
        else:
            raise SystemExit(f"{spec['name']}: no prompt of length {n} without a near tie")
        prompts.append(p)
        greedy_out.append({"prompt_index": i, "max_new_tokens": m, "new_ids": new_ids,
                           "logprobs": logprobs})

    full = [model(torch.tensor([p])).logits[0] for p in prompts]

    cached = []
    for i, p in enumerate(prompts):
        if len(p) < 2:
            continue
        k = max(1, len(p) // 2)
        out = model(torch.tensor([p[:k]]), use_cache=True)
        past = out.past_key_values
        got = [out.logits[0, -1]]
        for j in range(k, len(p)):
            out = model(torch.tensor([[p[j]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            got.append(out.logits[0, -1])
        got = torch.stack(got)
        assert torch.allclose(got, full[i][k - 1:], atol=1e-4, rtol=1e-4)
        cached.append({"prompt_index": i, "prefix_len": k, "logits": rows(got)})

    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), eos, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p)
        mask[i, longest - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    last = model(ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    for i in range(len(prompts)):
        assert torch.allclose(last[i], full[i][-1], atol=1e-4, rtol=1e-4)
    for g, f in zip(greedy_out, full):
        assert g["new_ids"][0] == int(f[-1].argmax())

    ref = {
        "model": spec["name"],
        "dtype": spec["dtype"],
        "prompts": prompts,
        "full_logits": [rows(f) for f in full],
        "cached": cached,
        "batch_left_padded": {"prompts": prompts, "pad_id": eos, "last_logits": rows(last)},
        "greedy": greedy_out,
    }

    if spec["name"] == "gpt2-tiny-tied":
        # One greedy run that really stops on eos before max_new_tokens, with >= 2 tokens before it.
        egen = torch.Generator().manual_seed(spec["seed"] + 7)
        found = None
        for _attempt in range(3000):
            n = int(torch.randint(1, 11, (1,), generator=egen))
            p = torch.randint(0, vocab - 1, (n,), generator=egen).tolist()
            m = 16
            new_ids, logprobs, mm = greedy(model, p, m, eos)
            if new_ids[-1] == eos and 3 <= len(new_ids) < m and mm >= MIN_MARGIN:
                found = {"prompt_index": None, "prompt": p, "max_new_tokens": m,
                         "new_ids": new_ids, "logprobs": logprobs}
                break
        if found is None:
            print(f"{spec['name']}: no greedy run stopping on eos found; skipped", file=sys.stderr)
        else:
            ref["greedy"].append(found)
            print(f"{spec['name']}: eos stop after {len(found['new_ids'])} tokens, "
                  f"prompt {found['prompt']} (attempt {_attempt})")
    return ref


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------- tokenizer cases

TOKENIZER_TEXTS = [
    "Hello world",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "a    b",
    "\t\tx\n\n\ny",
    "\r\n",
    "line one\r\nline two\n",
    "  \n  indented\n\tcode",
    "don't I'm we've they'll it's IT'S she'd you're",
    "12345",
    "3.14159",
    "1,000,000",
    "2026-11-29",
    "https://example.com/path?q=1&r=two#frag",
    "mail me at someone.name+tag@example.org",
    'fn main() { println!("hi"); }',
    "def f(x):\n    return x ** 2  # square",
    "naïve café",
    "Ångström",
    "中文",
    "日本語のテキスト",
    "한국어",
    "family 👨‍👩‍👧‍👦 emoji",
    "flags 🇯🇵🇫🇷",
    "thumbs 👍🏽👍",
    "\u0301",
    "e\u0301 a\u0308\u0301",
    "Hello world<|endoftext|> next doc",
    "<|endoftext|>",
    "Mixed: αβγ Привет مرحبا שלום",
    "\u00a0non-breaking\u2003em space",
    "!!!???...",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_cases():
    vocab_file, merges_file, tok_file = (TOK_DIR / "vocab.json", TOK_DIR / "merges.txt",
                                         TOK_DIR / "tokenizer.json")
    if not vocab_file.exists():
        print(f"{TOK_DIR} not found: tokenizer_cases.json not regenerated", file=sys.stderr)
        return None
    import tiktoken
    from transformers import GPT2TokenizerFast

    hf_a = GPT2TokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))
    hf_b = GPT2TokenizerFast(vocab_file=None, merges_file=None, tokenizer_file=str(tok_file))

    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    ranks = {bytes(byte_decoder[c] for c in tok): i for tok, i in vocab.items()
             if tok != "<|endoftext|>"}
    assert len(ranks) == 50256 and vocab["<|endoftext|>"] == 50256
    enc = tiktoken.Encoding(
        name="gpt2-local",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )

    cases = []
    for text in TOKENIZER_TEXTS:
        a = hf_a(text, add_special_tokens=False)["input_ids"]
        b = hf_b(text, add_special_tokens=False)["input_ids"]
        c = enc.encode(text, allowed_special="all")
        if not (a == b == c):
            raise SystemExit(f"tokenizers disagree on {text!r}:\n hf(vocab+merges) {a}\n "
                             f"hf(tokenizer.json) {b}\n tiktoken {c}")
        assert enc.decode(c) == text
        cases.append({"text": text, "ids": c})
    assert cases[0]["ids"] == [15496, 995]
    return cases


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in MODELS:
        folder = OUT / spec["name"]
        model, gen = build(spec)
        loaded = save(model, spec, folder)
        ref = references(model, spec, gen)
        # The reloaded model gives the very same logits.
        p = ref["prompts"][-1]
        assert ref["full_logits"][-1] == rows(loaded(torch.tensor([p])).logits[0])
        write_json(folder / "reference.json", ref)
        for f in folder.iterdir():
            f.chmod(0o644)  # safetensors writes 0600
        print(f"wrote {folder.relative_to(REPO)}")
    cases = tokenizer_cases()
    if cases is not None:
        path = OUT / "tokenizer_cases.json"
        with open(path, "w", encoding="ascii") as f:  # one case per line, \u escapes
            f.write("[\n" + ",\n".join(json.dumps(c) for c in cases) + "\n]\n")
        print(f"wrote {path.relative_to(REPO)} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
