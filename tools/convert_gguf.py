#!/usr/bin/env python3
"""Run llama.cpp's convert_hf_to_gguf.py, accepting our own small byte-level BPE tokenizers.

What: a thin wrapper around llama.cpp's HF -> GGUF converter; same command line, e.g.
    python tools/convert_gguf.py models/kjv-target --outfile /tmp/kjv-f32.gguf --outtype f32
Why: the converter identifies a BPE tokenizer's pre-tokenizer by hashing the ids it gives for a
  fixed test string and looking the hash up in a table of known Hugging Face models
  (TextModel.get_vocab_base_pre, in conversion/base.py in the llama.cpp of llama-cpp-python
  0.3.36). The embedded model models/kjv-target has its own 4096-token BPE vocabulary, so its hash
  is in no table and the converter stops with "BPE pre-tokenizer was not recognized". Its
  pre-tokenizer is nevertheless exactly GPT-2's (tokenizer.json: {"type": "ByteLevel",
  "add_prefix_space": false, "use_regex": true}, i.e. GPT-2's byte-level regex split, no
  normalizer), which llama.cpp calls "gpt-2". So when the hash is unknown and the tokenizer's
  pre-tokenizer is that ByteLevel one, we answer "gpt-2"; anything else still fails as before.
  Real GPT-2 tokenizers are recognized by the converter itself and pass through unchanged.
  Second patch: the converter's GPT2Model reads the context length from config.json's "n_ctx",
  which only the original OpenAI checkpoints carry; a config saved by transformers' GPT2Config
  (ours, and GPT2Config() for random models) has only "n_positions" (= the same thing), so we
  default n_ctx to n_positions. It also writes feed_forward_length = 4 * n_embd whatever n_inner
  says, so we refuse a config whose n_inner is set to anything else.
How: LLAMA_CPP_DIR must point at the llama.cpp source folder (tools/llama_cpp.sh sets it); its
  gguf-py/ is put on sys.path. Needs torch, transformers, safetensors, numpy, sentencepiece.
"""
import json
import os
import sys
from pathlib import Path

LLAMA = Path(os.environ.get("LLAMA_CPP_DIR",
                            "/tmp/llama/llama_cpp_python-0.3.36/vendor/llama.cpp"))
sys.path[:0] = [str(LLAMA), str(LLAMA / "gguf-py")]

import convert_hf_to_gguf as conv  # noqa: E402
from conversion import base  # noqa: E402  (where TextModel.get_vocab_base_pre lives)

_original = base.TextModel.get_vocab_base_pre


def _gpt2_byte_level(dir_model: Path) -> bool:
    """True if dir_model's tokenizer.json is a byte-level BPE with GPT-2's pre-tokenizer."""
    try:
        tok = json.loads((dir_model / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pre = tok.get("pre_tokenizer") or {}
    return (tok.get("model", {}).get("type") == "BPE" and tok.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False))


def get_vocab_base_pre(self, tokenizer) -> str:
    try:
        return _original(self, tokenizer)
    except NotImplementedError:
        if not _gpt2_byte_level(Path(self.dir_model)):
            raise
        base.logger.warning("unknown BPE hash, but tokenizer.json uses GPT-2's ByteLevel "
                            "pre-tokenizer: writing tokenizer.ggml.pre = 'gpt-2'")
        return "gpt-2"


base.TextModel.get_vocab_base_pre = get_vocab_base_pre

from conversion import gpt2  # noqa: E402

_gpt2_params = gpt2.GPT2Model.set_gguf_parameters


def set_gguf_parameters(self):
    h = self.hparams
    h.setdefault("n_ctx", h["n_positions"])
    if h.get("n_inner") not in (None, 4 * h["n_embd"]):
        raise ValueError(f"n_inner {h['n_inner']} != 4 * n_embd: the GPT-2 converter cannot write it")
    _gpt2_params(self)


gpt2.GPT2Model.set_gguf_parameters = set_gguf_parameters

if __name__ == "__main__":
    conv.main()
