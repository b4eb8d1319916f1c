#!/usr/bin/env python3
"""Make the test fixtures of decode-samplers (logits-processor, beam-search and sampling references).

What it makes, under decode-samplers/tests/fixtures/:

  processors.json   [{"name", "processor", "params", "input_ids", "prompt_len", "logits",
                      "expected", "reference", ("note"), ("tie_order_dependent")}]
                    V = 64 cases.  expected = the transformers LogitsProcessor / LogitsWarper
                    applied to torch.tensor([logits]) (f32) with input_ids = torch.tensor([input_ids]):
                      temperature        {"temperature"}                   TemperatureLogitsWarper
                      top_k              {"top_k", "min_tokens_to_keep"}   TopKLogitsWarper
                      top_p              {"top_p", "min_tokens_to_keep"}   TopPLogitsWarper
                      min_p              {"min_p", "min_tokens_to_keep"}   MinPLogitsWarper
                      typical_p          {"typical_p", "min_tokens_to_keep"} TypicalLogitsWarper(mass=)
                      repetition_penalty {"penalty"}                       RepetitionPenaltyLogitsProcessor
                      no_repeat_ngram    {"n"}                             NoRepeatNGramLogitsProcessor
                      min_new_tokens     {"min_new_tokens", "eos_token_ids"} MinNewTokensLengthLogitsProcessor
                                         (prompt_length_to_skip = prompt_len)
                      banned             {"token_ids"}      NoBadWordsLogitsProcessor([[t] for t in ids])
                      logit_bias         {"bias": {"<id>": b}}  SequenceBiasLogitsProcessor({(id,): b})
                      chain              {"steps": [{"processor", "params"}, ...]}  applied in order
                    plus "frequency_presence" {"frequency_penalty": f, "presence_penalty": q}
                    (not in transformers; "reference": "openai-semantics-numpy"): with c[t] = count of t
                    in input_ids[prompt_len:], out[t] = logits[t] - (f32(c[t]) * f32(f) + f32(c[t] > 0)
                    * f32(q)), all in float32 (numpy).
                    "tie_order_dependent": true marks the few tie cases whose result depends on the
                    order torch's CPU sort gives equal values (checked by re-running every case on
                    permuted vocabularies; all other cases are permutation-invariant).
  processors_large.json   {"vocab_size": 50257, "logits": [50257 floats], "cases": [{"name",
                    "processor", "params", "input_ids", "prompt_len", "reference",
                    "expected_finite": [[id, value], ...]}]}: 4 cases at the real GPT-2 width that
                    share one logits vector; every id not listed in expected_finite is -inf.  (Inline
                    V = 50257 arrays in processors.json would not fit the size budget.)
  sampling.json     [{"name", "processor": "chain", "params": {"steps"}, "input_ids", "prompt_len",
                      "logits", "expected", "probs"}]  3 chains on V = 64 logits; probs =
                    torch.softmax(expected) in f32 (0.0 where expected is -inf), for statistical tests.
  beam.json         [{"name", "prompt", "num_beams", "max_new_tokens", "length_penalty",
                      "early_stopping", "num_return_sequences", "eos_token_id", "sequences",
                      "sequences_scores", "stopped_on_eos", "min_margin", "transformers_version"}]
                    model.generate(do_sample=False, num_beams, max_new_tokens, length_penalty,
                    early_stopping, num_return_sequences, eos_token_id=210, output_scores=True,
                    return_dict_in_generate=True) on decode-models/tests/fixtures/gpt2-tiny-tied
                    (eager attention, f32, CPU).  sequences are the generated ids only, ending in one
                    210 iff that hypothesis finished on EOS (stopped_on_eos).  Run with pad_token_id=0
                    (so padding is told apart from EOS) and checked to give the same result with
                    pad_token_id=210.  Every case is also re-run by an independent Python beam search
                    (one uncached forward per beam, the semantics of BEAM_SEMANTICS.md) that must agree;
                    min_margin is the smallest score gap of any decision it took (top-2k candidate
                    order, finished-hypothesis ranking, is_done test); prompts with a gap < 1e-4 are
                    redrawn.
  BEAM_SEMANTICS.md  plain-text summary of the transformers beam-search semantics relied upon.

  JSON floats are the exact float32 values written as JSON numbers (Python's repr of the double);
  -inf is written as null; +inf and NaN never occur.

How to run (from the repository root; needs decode-models/tests/fixtures/gpt2-tiny-tied, which
tools/make_fixtures.py makes):

    pip install -r tools/requirements.txt && python tools/make_sampler_fixtures.py

The output is deterministic (fixed seeds, one CPU thread, eager attention).
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "decode-samplers" / "tests" / "fixtures"
MODEL_DIR = REPO / "decode-models" / "tests" / "fixtures" / "gpt2-tiny-tied"

V = 64
V_LARGE = 50257
NEG_INF = float("-inf")
# A beam-search decision closer than this is treated as a near tie (an f32 implementation could
# legitimately decide the other way), and the prompt is redrawn.
BEAM_MIN_MARGIN = 1e-4


# ----------------------------------------------------------------------------- helpers

def floats(t):
    """A 1-D f32 tensor as a list of exact float32 values (as Python floats), -inf as None."""
    assert t.dtype == torch.float32 and t.dim() == 1
    out = []
    for x in t.tolist():
        if x == NEG_INF:
            out.append(None)
        else:
            assert math.isfinite(x), f"non-finite value {x}"
            out.append(x)
    return out


def tensor(values):
    """Inverse of floats(): None -> -inf, f32."""
    return torch.tensor([NEG_INF if x is None else x for x in values], dtype=torch.float32)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        f.write("\n")


def f32(x):
    """x rounded to float32, as a Python float (so that JSON params are exact f32 values)."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------- processors

def make_processor(kind, params, prompt_len, hf_extra=None):
    hf_extra = hf_extra or {}
    if kind == "temperature":
        return TemperatureLogitsWarper(float(params["temperature"]))
    if kind == "top_k":
        return TopKLogitsWarper(top_k=params["top_k"], min_tokens_to_keep=params["min_tokens_to_keep"])
    if kind == "top_p":
        return TopPLogitsWarper(top_p=params["top_p"], min_tokens_to_keep=params["min_tokens_to_keep"])
    if kind == "min_p":
        return MinPLogitsWarper(min_p=params["min_p"], min_tokens_to_keep=params["min_tokens_to_keep"])
    if kind == "typical_p":
        return TypicalLogitsWarper(mass=params["typical_p"], min_tokens_to_keep=params["min_tokens_to_keep"])
    if kind == "repetition_penalty":
        return RepetitionPenaltyLogitsProcessor(float(params["penalty"]))
    if kind == "no_repeat_ngram":
        return NoRepeatNGramLogitsProcessor(params["n"])
    if kind == "min_new_tokens":
        return MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=prompt_len,
                                                 min_new_tokens=params["min_new_tokens"],
                                                 eos_token_id=list(params["eos_token_ids"]))
    if kind == "banned":
        eos = hf_extra.get("eos_token_id")
        assert eos is None or eos not in params["token_ids"]
        return NoBadWordsLogitsProcessor(bad_words_ids=[[t] for t in params["token_ids"]], eos_token_id=eos)
    if kind == "logit_bias":
        return SequenceBiasLogitsProcessor(
            sequence_bias={(int(k),): float(b) for k, b in params["bias"].items()})
    raise ValueError(kind)


def freq_presence_numpy(params, input_ids, prompt_len, logits):
    x = np.array([np.float32(NEG_INF) if v is None else np.float32(v) for v in logits], dtype=np.float32)
    counts = np.zeros(len(x), dtype=np.float32)
    for t in input_ids[prompt_len:]:
        counts[t] += np.float32(1)
    f = np.float32(params["frequency_penalty"])
    q = np.float32(params["presence_penalty"])
    pen = counts * f + (counts > 0).astype(np.float32) * q
    assert pen.dtype == np.float32
    out = (x - pen).astype(np.float32)
    return torch.from_numpy(out)


def apply(kind, params, input_ids, prompt_len, logits, hf_extra=None):
    """logits: 1-D f32 tensor -> processed 1-D f32 tensor."""
    if kind == "chain":
        x = logits
        for step in params["steps"]:
            x = apply(step["processor"], step["params"], input_ids, prompt_len, x,
                      (hf_extra or {}).get(step["processor"]))
        return x
    if kind == "frequency_presence":
        return freq_presence_numpy(params, input_ids, prompt_len, floats(logits))
    proc = make_processor(kind, params, prompt_len, hf_extra)
    ids = torch.tensor([input_ids], dtype=torch.long)
    with torch.no_grad():
        out = proc(ids, logits.clone().unsqueeze(0))
    assert out.dtype == torch.float32 and out.shape == (1, logits.shape[0])
    return out[0].clone()


def permute_params(kind, params, perm):
    p = dict(params)
    if kind == "banned":
        p["token_ids"] = [int(perm[t]) for t in params["token_ids"]]
    elif kind == "logit_bias":
        p["bias"] = {str(int(perm[int(k)])): b for k, b in params["bias"].items()}
    elif kind == "min_new_tokens":
        p["eos_token_ids"] = [int(perm[t]) for t in params["eos_token_ids"]]
    elif kind == "chain":
        p["steps"] = [{"processor": s["processor"],
                       "params": permute_params(s["processor"], s["params"], perm)}
                      for s in params["steps"]]
    return p


def order_dependent(case, logits, expected, hf_extra, gen):
    """Re-run the case on permuted vocabularies; True if the result does not permute along."""
    n = logits.shape[0]
    perms = [np.arange(n)[::-1].copy()] + [torch.randperm(n, generator=gen).numpy() for _ in range(3)]
    for perm in perms:
        pl = torch.empty_like(logits)
        pl[torch.from_numpy(perm)] = logits
        extra = hf_extra
        if hf_extra and "banned" in hf_extra and hf_extra["banned"].get("eos_token_id") is not None:
            extra = {"banned": {"eos_token_id": int(perm[hf_extra["banned"]["eos_token_id"]])}}
        if hf_extra and "eos_token_id" in hf_extra and hf_extra["eos_token_id"] is not None:
            extra = {"eos_token_id": int(perm[hf_extra["eos_token_id"]])}
        got = apply(case["processor"], permute_params(case["processor"], case["params"], perm),
                    [int(perm[t]) for t in case["input_ids"]], case["prompt_len"], pl, extra)
        back = got[torch.from_numpy(perm)]
        if not torch.equal(back, expected):
            return True
    return False


class Cases:
    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.perm_gen = torch.Generator().manual_seed(seed + 1)
        self.cases = []

    def randn(self, n=V, std=2.0):
        return (torch.randn(n, generator=self.gen) * std).to(torch.float32)

    def ids(self, n, vocab=V):
        return torch.randint(0, vocab, (n,), generator=self.gen).tolist()

    def add(self, name, kind, params, logits, input_ids=None, prompt_len=None, note=None,
            hf_extra=None, expect_order_dependent=False):
        assert all(c["name"] != name for c in self.cases), name
        if input_ids is None:
            input_ids = self.ids(12)
        if prompt_len is None:
            prompt_len = min(5, len(input_ids))
        assert 0 <= prompt_len <= len(input_ids)
        logits = logits.to(torch.float32)
        assert not torch.isnan(logits).any() and not (logits == float("inf")).any()
        case = {"name": name, "processor": kind, "params": params, "input_ids": list(input_ids),
                "prompt_len": prompt_len}
        expected = apply(kind, params, case["input_ids"], prompt_len, logits,
                         hf_extra if kind != "chain" else hf_extra)
        assert not torch.isnan(expected).any() and not (expected == float("inf")).any(), name
        dep = order_dependent(case, logits, expected, hf_extra, self.perm_gen)
        if dep != expect_order_dependent:
            raise SystemExit(f"{name}: order dependence {dep}, expected {expect_order_dependent}")
        case["logits"] = floats(logits)
        case["expected"] = floats(expected)
        case["reference"] = "openai-semantics-numpy" if kind == "frequency_presence" else "transformers"
        if dep:
            case["tie_order_dependent"] = True
        if note:
            case["note"] = note
        self.cases.append(case)
        return logits, expected


def with_neg_inf(logits, count, gen):
    x = logits.clone()
    idx = torch.randperm(x.shape[0], generator=gen)[:count]
    x[idx] = NEG_INF
    return x


def tie_logits(gen):
    """V logits from a few distinct levels: 2 x 4.0, 5 x 3.0, 10 x 1.5, 47 x -1.0, shuffled."""
    levels = [4.0] * 2 + [3.0] * 5 + [1.5] * 10 + [-1.0] * (V - 17)
    x = torch.tensor(levels, dtype=torch.float32)
    return x[torch.randperm(V, generator=gen)]


def processor_cases():
    C = Cases(seed=4242)
    g = C.gen

    # --- temperature
    C.add("temperature_0.7", "temperature", {"temperature": 0.7}, C.randn())
    C.add("temperature_1.0_identity", "temperature", {"temperature": 1.0}, C.randn())
    C.add("temperature_2.0", "temperature", {"temperature": 2.0}, C.randn())
    C.add("temperature_1e-3", "temperature", {"temperature": 1e-3}, C.randn())
    C.add("temperature_1e-5", "temperature", {"temperature": 1e-5}, C.randn())
    C.add("temperature_0.5_with_neg_inf", "temperature", {"temperature": 0.5},
          with_neg_inf(C.randn(), 10, g))

    # --- top_k
    C.add("top_k_5", "top_k", {"top_k": 5, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_k_1", "top_k", {"top_k": 1, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_k_50_of_64", "top_k", {"top_k": 50, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_k_eq_vocab", "top_k", {"top_k": V, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_k_gt_vocab", "top_k", {"top_k": V + 10, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_k_3_min_keep_8", "top_k", {"top_k": 3, "min_tokens_to_keep": 8}, C.randn(),
          note="min_tokens_to_keep > top_k: HF keeps max(top_k, min_tokens_to_keep) = 8")
    C.add("top_k_5_ties_at_boundary", "top_k", {"top_k": 5, "min_tokens_to_keep": 1}, tie_logits(g),
          note="levels 2x4.0, 5x3.0, 10x1.5, rest -1.0: the 5th value 3.0 is tied, all 7 tokens "
               ">= it are kept (mask is logits < kth value)")
    C.add("top_k_2_ties_group_end", "top_k", {"top_k": 2, "min_tokens_to_keep": 1}, tie_logits(g))
    C.add("top_k_10_with_many_neg_inf", "top_k", {"top_k": 10, "min_tokens_to_keep": 1},
          with_neg_inf(C.randn(), V - 4, g),
          note="only 4 finite logits: the 10th value is -inf, nothing more is removed")

    # --- top_p
    C.add("top_p_0.9", "top_p", {"top_p": 0.9, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_p_0.5", "top_p", {"top_p": 0.5, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_p_1.0", "top_p", {"top_p": 1.0, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_p_0.01_min_keep_1", "top_p", {"top_p": 0.01, "min_tokens_to_keep": 1}, C.randn())
    C.add("top_p_0.01_min_keep_3", "top_p", {"top_p": 0.01, "min_tokens_to_keep": 3}, C.randn())
    C.add("top_p_0.8_with_neg_inf", "top_p", {"top_p": 0.8, "min_tokens_to_keep": 1},
          with_neg_inf(C.randn(), 20, g))
    C.add("top_p_0.95_min_keep_5_with_neg_inf", "top_p", {"top_p": 0.95, "min_tokens_to_keep": 5},
          with_neg_inf(C.randn(std=4.0), 30, g))
    # ties at the top-p boundary
    tl = tie_logits(g)
    pr = torch.softmax(tl.double(), -1)
    p4, p3 = float(pr[tl == 4.0][0]), float(pr[tl == 3.0][0])
    c1, c2 = 2 * p4, 2 * p4 + 5 * p3
    top_p_whole = round(c2 - p3 / 2, 4)   # the whole 3.0 group is needed: all 7 kept
    assert c2 - p3 + 1e-3 < top_p_whole < c2 - 1e-3
    C.add("top_p_ties_group_is_last_kept", "top_p", {"top_p": top_p_whole, "min_tokens_to_keep": 1}, tl,
          note="levels 2x4.0, 5x3.0, 10x1.5, rest -1.0; top_p chosen so that the whole 3.0 group "
               "is kept (result independent of the order among ties)")
    tl2 = tie_logits(g)
    top_p_split = round(c1 + 2.5 * p3, 4)  # cuts through the 3.0 group: 3 of the 5 kept
    assert c1 + 2 * p3 + 1e-3 < top_p_split < c1 + 3 * p3 - 1e-3
    C.add("top_p_ties_cut_inside_group", "top_p", {"top_p": top_p_split, "min_tokens_to_keep": 1}, tl2,
          expect_order_dependent=True,
          note="the cut falls inside the tied 3.0 group: both 4.0 tokens and exactly 3 of the 5 "
               "3.0 tokens are kept.  WHICH 3 depends on the order torch.sort (default, not stable "
               "on CPU) gives equal values; no simple rule (stable ascending or descending, by id) "
               "reproduces it.  Test only the number kept per tie group (and the kept values), not "
               "the exact ids.")

    # --- min_p
    C.add("min_p_0.1", "min_p", {"min_p": 0.1, "min_tokens_to_keep": 1}, C.randn())
    C.add("min_p_0.05", "min_p", {"min_p": 0.05, "min_tokens_to_keep": 1}, C.randn())
    C.add("min_p_0", "min_p", {"min_p": 0.0, "min_tokens_to_keep": 1}, C.randn())
    C.add("min_p_1.0", "min_p", {"min_p": 1.0, "min_tokens_to_keep": 1}, C.randn())
    C.add("min_p_1.0_tied_max", "min_p", {"min_p": 1.0, "min_tokens_to_keep": 1}, tie_logits(g),
          note="two tokens share the max logit 4.0: both have prob == max prob and are kept")
    C.add("min_p_0.5_min_keep_5", "min_p", {"min_p": 0.5, "min_tokens_to_keep": 5}, C.randn())
    C.add("min_p_0.2_with_neg_inf", "min_p", {"min_p": 0.2, "min_tokens_to_keep": 1},
          with_neg_inf(C.randn(), 20, g))

    # --- typical_p
    C.add("typical_p_0.2", "typical_p", {"typical_p": 0.2, "min_tokens_to_keep": 1}, C.randn())
    C.add("typical_p_0.95", "typical_p", {"typical_p": 0.95, "min_tokens_to_keep": 1}, C.randn())
    C.add("typical_p_0.5", "typical_p", {"typical_p": 0.5, "min_tokens_to_keep": 1}, C.randn())
    C.add("typical_p_0.2_min_keep_4", "typical_p", {"typical_p": 0.2, "min_tokens_to_keep": 4}, C.randn())
    C.add("typical_p_0.9_with_neg_inf", "typical_p", {"typical_p": 0.9, "min_tokens_to_keep": 1},
          with_neg_inf(C.randn(), 20, g))

    # --- repetition_penalty
    def rep_logits():
        x = C.randn()
        x[3], x[7], x[11], x[20], x[33] = 2.5, -1.75, 0.0, 4.0, -3.0
        return x
    rep_ids = [3, 7, 20, 11, 3, 3, 33, 7, 40, 20, 3, 45]  # repeats; prompt part included too
    C.add("repetition_penalty_1.5_pos_neg_zero_repeats", "repetition_penalty", {"penalty": 1.5},
          rep_logits(), rep_ids, 4,
          note="HF penalises every id in input_ids (prompt included), once per distinct id: "
               "x<0 -> x*penalty else x/penalty")
    C.add("repetition_penalty_0.7_pos_neg_zero_repeats", "repetition_penalty", {"penalty": 0.7},
          rep_logits(), rep_ids, 4)
    C.add("repetition_penalty_1.2", "repetition_penalty", {"penalty": 1.2}, C.randn(),
          C.ids(20), 8)
    x = rep_logits()
    x[45] = NEG_INF
    C.add("repetition_penalty_1.3_neg_inf_id", "repetition_penalty", {"penalty": 1.3}, x, rep_ids, 4,
          note="a penalised id whose logit is already -inf stays -inf")

    # --- frequency / presence (OpenAI semantics, numpy)
    fp_ids = [3, 7, 7, 9, 3, 5, 3, 3, 7, 12, 5, 3]  # prompt 3,7,7,9 then generated
    C.add("frequency_0.5_presence_0.25", "frequency_presence",
          {"frequency_penalty": 0.5, "presence_penalty": 0.25}, C.randn(), fp_ids, 4,
          note="counts over input_ids[prompt_len:] only (prompt ids 9 are not penalised)")
    C.add("frequency_0_presence_1", "frequency_presence",
          {"frequency_penalty": 0.0, "presence_penalty": 1.0}, C.randn(), fp_ids, 4)
    C.add("frequency_1_presence_0", "frequency_presence",
          {"frequency_penalty": 1.0, "presence_penalty": 0.0}, C.randn(), fp_ids, 4)
    C.add("frequency_-0.5_presence_-0.75_negative", "frequency_presence",
          {"frequency_penalty": -0.5, "presence_penalty": -0.75}, C.randn(), fp_ids, 4)
    C.add("frequency_0.75_presence_0.5_only_prompt_repeats", "frequency_presence",
          {"frequency_penalty": 0.75, "presence_penalty": 0.5}, C.randn(),
          [8, 8, 8, 2, 2, 30], 5, note="only one generated id (30): ids 8 and 2 are prompt-only")
    C.add("frequency_0.3_presence_0.6_with_neg_inf", "frequency_presence",
          {"frequency_penalty": f32(0.3), "presence_penalty": f32(0.6)},
          with_neg_inf(C.randn(), 6, g), fp_ids, 4)

    # --- no_repeat_ngram (the prompt counts too)
    C.add("no_repeat_ngram_1", "no_repeat_ngram", {"n": 1}, C.randn(), [5, 9, 5, 13, 2], 2,
          note="n=1 bans every id already in input_ids")
    C.add("no_repeat_ngram_2", "no_repeat_ngram", {"n": 2}, C.randn(), [5, 7, 5, 9, 1, 5], 2,
          note="last token 5 was followed by 7 and 9: both banned")
    C.add("no_repeat_ngram_2_no_match", "no_repeat_ngram", {"n": 2}, C.randn(), [5, 7, 5, 9, 1, 6], 2)
    C.add("no_repeat_ngram_3", "no_repeat_ngram", {"n": 3}, C.randn(), [1, 2, 3, 1, 2, 4, 8, 1, 2], 3,
          note="(1,2) was followed by 3 and 4: both banned")
    C.add("no_repeat_ngram_3_overlapping", "no_repeat_ngram", {"n": 3}, C.randn(), [4, 4, 4, 4], 1,
          note="(4,4) was followed by 4: banned")
    C.add("no_repeat_ngram_3_too_short", "no_repeat_ngram", {"n": 3}, C.randn(), [6], 1,
          note="len(input_ids)+1 < n: nothing banned")
    C.add("no_repeat_ngram_4_too_short", "no_repeat_ngram", {"n": 4}, C.randn(), [6, 6], 1)

    # --- min_new_tokens
    C.add("min_new_tokens_masking", "min_new_tokens", {"min_new_tokens": 4, "eos_token_ids": [63]},
          C.randn(), [10, 11, 12, 13, 14, 20, 21], 5, note="2 new tokens < 4: eos -> -inf")
    C.add("min_new_tokens_masking_two_eos", "min_new_tokens",
          {"min_new_tokens": 3, "eos_token_ids": [0, 63]}, C.randn(), [10, 11, 12, 20], 3)
    C.add("min_new_tokens_masking_no_new_yet", "min_new_tokens",
          {"min_new_tokens": 1, "eos_token_ids": [63]}, C.randn(), [10, 11, 12], 3)
    C.add("min_new_tokens_exactly_satisfied", "min_new_tokens",
          {"min_new_tokens": 2, "eos_token_ids": [63]}, C.randn(), [10, 11, 12, 20, 21], 3,
          note="2 new tokens == min_new_tokens: no masking")
    C.add("min_new_tokens_already_satisfied", "min_new_tokens",
          {"min_new_tokens": 2, "eos_token_ids": [0, 63]}, C.randn(), [10, 11, 12, 20, 21, 22, 23], 3)

    # --- banned (single-token bad words)
    C.add("banned_3_ids", "banned", {"token_ids": [3, 17, 42]}, C.randn(), hf_extra={"eos_token_id": None})
    C.add("banned_with_eos_not_in_list", "banned", {"token_ids": [0, 1, 62]}, C.randn(),
          hf_extra={"eos_token_id": 63},
          note="built with NoBadWordsLogitsProcessor(eos_token_id=63); 63 is not in the list")
    C.add("banned_already_neg_inf", "banned", {"token_ids": [5, 6]},
          with_neg_inf(C.randn(), 8, g), hf_extra={"eos_token_id": None})

    # --- logit_bias
    C.add("logit_bias_three", "logit_bias", {"bias": {"3": 5.0, "10": -2.5, "63": -100.0}}, C.randn())
    C.add("logit_bias_single_large", "logit_bias", {"bias": {"17": 30.0}}, C.randn())
    C.add("logit_bias_non_dyadic", "logit_bias", {"bias": {"2": f32(0.3), "40": f32(-1.7)}}, C.randn(),
          note="bias values are f32; HF adds them as an f32 tensor")
    C.add("logit_bias_on_neg_inf", "logit_bias", {"bias": {"7": 4.0}},
          with_neg_inf(C.randn(), 10, g))

    # --- chains
    chain_ids = None

    def chain_case(name, steps, logits, input_ids=None, prompt_len=None, hf_extra=None, note=None):
        return C.add(name, "chain", {"steps": [{"processor": k, "params": p} for k, p in steps]},
                     logits, input_ids, prompt_len, note=note, hf_extra=hf_extra)

    x = C.randn()
    top = torch.argsort(x, descending=True)[:6].tolist()
    chain_ids = [top[0], 9, top[2], top[0], 30, top[4], 12, top[2]]
    chain_case("chain_rep1.3_temp0.8_topk50_topp0.9",
               [("repetition_penalty", {"penalty": 1.3}), ("temperature", {"temperature": 0.8}),
                ("top_k", {"top_k": 50, "min_tokens_to_keep": 1}),
                ("top_p", {"top_p": 0.9, "min_tokens_to_keep": 1})], x, chain_ids, 3)
    x = C.randn()
    top = torch.argsort(x, descending=True)[:6].tolist()
    chain_case("chain_rep1.3_temp0.8_topk10_topp0.9",
               [("repetition_penalty", {"penalty": 1.3}), ("temperature", {"temperature": 0.8}),
                ("top_k", {"top_k": 10, "min_tokens_to_keep": 1}),
                ("top_p", {"top_p": 0.9, "min_tokens_to_keep": 1})], x,
               [top[1], top[1], 3, top[3], 50], 2)
    x = C.randn()
    top = torch.argsort(x, descending=True)[:6].tolist()
    chain_case("chain_rep1.2_temp0.9_minp0.1",
               [("repetition_penalty", {"penalty": 1.2}), ("temperature", {"temperature": 0.9}),
                ("min_p", {"min_p": 0.1, "min_tokens_to_keep": 1})], x, [top[0], 5, top[1], 7], 2)
    chain_case("chain_temp0.7_topk20_minp0.05",
               [("temperature", {"temperature": 0.7}), ("top_k", {"top_k": 20, "min_tokens_to_keep": 1}),
                ("min_p", {"min_p": 0.05, "min_tokens_to_keep": 1})], C.randn())
    chain_case("chain_temp1.1_typical0.8",
               [("temperature", {"temperature": 1.1}),
                ("typical_p", {"typical_p": 0.8, "min_tokens_to_keep": 1})], C.randn())
    x = C.randn()
    top = torch.argsort(x, descending=True)[:6].tolist()
    chain_case("chain_rep1.3_temp0.8_topk50_typical0.9",
               [("repetition_penalty", {"penalty": 1.3}), ("temperature", {"temperature": 0.8}),
                ("top_k", {"top_k": 50, "min_tokens_to_keep": 1}),
                ("typical_p", {"typical_p": 0.9, "min_tokens_to_keep": 1})], x, [top[0], top[3], 1, 2], 1)
    x = C.randn()
    top = torch.argsort(x, descending=True)[:8].tolist()
    ng_ids = [top[0], top[1], 4, top[0], top[1], 9, top[0]]   # no_repeat_ngram 2 bans top[1] and 4...
    chain_case("chain_norepeat2_minnew_banned_bias_topk10_temp0.5",
               [("no_repeat_ngram", {"n": 2}),
                ("min_new_tokens", {"min_new_tokens": 5, "eos_token_ids": [top[2]]}),
                ("banned", {"token_ids": [top[3]]}),
                ("logit_bias", {"bias": {str(top[7]): 3.0, "20": -1.5}}),
                ("top_k", {"top_k": 10, "min_tokens_to_keep": 1}),
                ("temperature", {"temperature": 0.5})], x, ng_ids, 3,
               hf_extra={"banned": {"eos_token_id": None}},
               note="no_repeat_ngram bans the followers of the last token; min_new_tokens masks "
                    "eos (4 new < 5); then a banned id, a bias, top_k 10 and temperature")
    chain_case("chain_temp2.0_topp0.5_minkeep3",
               [("temperature", {"temperature": 2.0}),
                ("top_p", {"top_p": 0.5, "min_tokens_to_keep": 3})], C.randn())
    chain_case("chain_topk5_then_topp0.6_with_neg_inf",
               [("top_k", {"top_k": 5, "min_tokens_to_keep": 1}),
                ("top_p", {"top_p": 0.6, "min_tokens_to_keep": 1})], with_neg_inf(C.randn(), 12, g))
    return C.cases


def large_cases():
    """4 cases at the real GPT-2 width sharing one logits vector."""
    gen = torch.Generator().manual_seed(5050)
    logits = (torch.randn(V_LARGE, generator=gen) * 2.0).to(torch.float32)
    order = torch.argsort(logits, descending=True).tolist()
    input_ids = [order[0], 464, order[3], 50256, order[0], 13, order[10], order[3], order[60]]
    specs = [
        ("large_top_k_50", "top_k", {"top_k": 50, "min_tokens_to_keep": 1}),
        ("large_temp0.7_top_p_0.9", "chain",
         {"steps": [{"processor": "temperature", "params": {"temperature": 0.7}},
                    {"processor": "top_p", "params": {"top_p": 0.9, "min_tokens_to_keep": 1}}]}),
        ("large_min_p_0.05", "min_p", {"min_p": 0.05, "min_tokens_to_keep": 1}),
        ("large_rep1.3_temp0.8_topk50_topp0.9", "chain",
         {"steps": [{"processor": "repetition_penalty", "params": {"penalty": 1.3}},
                    {"processor": "temperature", "params": {"temperature": 0.8}},
                    {"processor": "top_k", "params": {"top_k": 50, "min_tokens_to_keep": 1}},
                    {"processor": "top_p", "params": {"top_p": 0.9, "min_tokens_to_keep": 1}}]}),
    ]
    perm_gen = torch.Generator().manual_seed(5051)
    cases = []
    for name, kind, params in specs:
        case = {"name": name, "processor": kind, "params": params, "input_ids": input_ids,
                "prompt_len": 4}
        expected = apply(kind, params, input_ids, 4, logits)
        assert not order_dependent(case, logits, expected, None, perm_gen), name
        finite = torch.isfinite(expected)
        assert not torch.isnan(expected).any() and not (expected == float("inf")).any()
        kept = torch.nonzero(finite).flatten().tolist()
        case["reference"] = "transformers"
        case["expected_finite"] = [[i, float(expected[i])] for i in kept]
        cases.append(case)
        print(f"  {name}: {len(kept)} finite")
    return {"vocab_size": V_LARGE,
            "note": "one logits vector shared by all cases; expected = logits processed as in "
                    "processors.json; ids not in expected_finite are -inf",
            "logits": floats(logits), "cases": cases}


def sampling_cases():
    C = Cases(seed=6161)
    out = []
    specs = [
        ("sampling_top_k_10", [("top_k", {"top_k": 10, "min_tokens_to_keep": 1})]),
        ("sampling_temp0.7_top_p_0.8", [("temperature", {"temperature": 0.7}),
                                        ("top_p", {"top_p": 0.8, "min_tokens_to_keep": 1})]),
        ("sampling_rep1.2_temp1.3_min_p_0.05", [("repetition_penalty", {"penalty": 1.2}),
                                                ("temperature", {"temperature": 1.3}),
                                                ("min_p", {"min_p": 0.05, "min_tokens_to_keep": 1})]),
    ]
    for name, steps in specs:
        x = C.randn()
        top = torch.argsort(x, descending=True)[:5].tolist()
        ids = [top[0], 2, top[2], 9, top[0], top[4]]
        C.add(name, "chain", {"steps": [{"processor": k, "params": p} for k, p in steps]}, x, ids, 3)
    for c in C.cases:
        probs = torch.softmax(tensor(c["expected"]), dim=-1)
        c["probs"] = floats(probs)
        assert all(p is not None for p in c["probs"])
        out.append(c)
    return out


# ----------------------------------------------------------------------------- beam search

BEAM_SEMANTICS = """\
transformers {version} beam search (generation/utils.py _beam_search; generation/beam_search.py BeamSearchScorer,
BeamHypotheses), as relied upon by beam.json.  P = prompt length, k = num_beams, lp = length_penalty.
1. Start: k copies of the prompt, running scores [0, -1e9, ...] (f32), so step 1 only expands beam 0.
2. Each step: cand = log_softmax(f32 logits of each beam) -> logits processors (none here) -> + running beam score.
   The k x vocab candidates are flattened (beam-major); topk(sorted) keeps max(2, 1 + n_eos) * k (= 2k, one eos).
3. Walk the candidates in rank order: an eos candidate with rank < k is offered to the finished hypotheses (its
   sum = that candidate's score; the eos ends it); an eos with rank >= k is skipped; other candidates become the
   next running beams until k are filled (then stop walking).
4. BeamHypotheses.add: score = sum_logprobs / gen_len ** lp, gen_len = number of GENERATED tokens INCLUDING the eos
   (prompt not counted); Python double from the f32 sum.  Kept if fewer than k held or score > worst (strict);
   above k the worst is dropped.
5. is_done, after each step (sticky): false while fewer than k finished.  early_stopping=True: true.  False: true
   iff worst >= best / (cur_len - P) ** lp, with best = max candidate score of this step (rank 0, eos or not) and
   cur_len - P = generated length after this step.  "never": same, but if lp > 0 the denominator is
   max_new_tokens ** lp (max_length - P) instead.
6. The loop ends when done or when P + max_new_tokens tokens are reached.  If not done, finalize adds every running
   beam (sum = running f32 score, gen_len = max_new_tokens, no eos) to the hypotheses.
7. Output: hypotheses sorted by score (stable), the best num_return_sequences returned best first;
   sequences_scores = their normalised scores stored as f32; eos-finished ones get one eos appended, then
   pad_token_id padding to the longest.
"""


def load_model():
    model = GPT2LMHeadModel.from_pretrained(str(MODEL_DIR), torch_dtype=torch.float32,
                                            attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    return model


@torch.no_grad()
def hf_beam(model, prompt, k, m, lp, es, r, eos, pad):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=k,
                         max_new_tokens=m, length_penalty=lp, early_stopping=es,
                         num_return_sequences=r, eos_token_id=eos, pad_token_id=pad,
                         output_scores=True, return_dict_in_generate=True)
    seqs, stopped = [], []
    for row in out.sequences.tolist():
        assert row[:len(prompt)] == prompt
        gen = row[len(prompt):]
        if eos in gen:
            j = gen.index(eos)
            assert all(t == pad for t in gen[j + 1:])
            seqs.append(gen[:j + 1])
            stopped.append(True)
        else:
            assert len(gen) == m, gen
            seqs.append(gen)
            stopped.append(False)
    scores = out.sequences_scores
    assert scores.dtype == torch.float32
    return seqs, scores.tolist(), stopped


@torch.no_grad()
def my_beam(model, prompt, k, m, lp, es, r, eos):
    """Independent beam search (uncached single-sequence forwards) following BEAM_SEMANTICS."""
    P = len(prompt)
    max_length = P + m
    beams = [(list(prompt), torch.tensor(0.0 if i == 0 else -1e9, dtype=torch.float32)) for i in range(k)]
    hyps = []  # (score, gen_ids, stopped)
    worst = 1e9
    margins = []
    done = False
    any_eos_hyp = False

    def add(score, gen, stopped):
        nonlocal worst
        if len(hyps) < k or score > worst:
            if hyps:
                margins.append(abs(score - worst))
            hyps.append((score, gen, stopped))
            if len(hyps) > k:
                s = sorted([(h[0], i) for i, h in enumerate(hyps)])
                del hyps[s[0][1]]
                worst = s[1][0]
            else:
                worst = min(score, worst)
        else:
            margins.append(abs(score - worst))

    for step in range(m):
        cur_len = P + step + 1
        rows = []
        for seq, bs in beams:
            lp_row = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].float(), dim=-1)
            rows.append(lp_row + bs)
        flat = torch.cat(rows)
        vocab = rows[0].shape[0]
        vals, idx = torch.topk(flat, 2 * k + 1, sorted=True)
        margins.extend((vals[:-1] - vals[1:]).tolist())
        vals, idx = vals[:2 * k], idx[:2 * k]
        new_beams = []
        for rank, (v, i) in enumerate(zip(vals, idx.tolist())):
            b, tok = divmod(i, vocab)
            if tok == eos:
                if rank >= k:
                    continue
                any_eos_hyp = True
                add(float(v) / ((cur_len - P) ** lp), beams[b][0][P:] + [eos], True)
            else:
                new_beams.append((beams[b][0] + [tok], v))
            if len(new_beams) == k:
                break
        beams = new_beams
        best = float(vals.max())
        if len(hyps) >= k:
            if es is True:
                done = True
            else:
                denom_len = (max_length - P) if (es == "never" and lp > 0.0) else (cur_len - P)
                hi = best / denom_len ** lp
                margins.append(abs(worst - hi))
                done = worst >= hi
        if done:
            break
    if not done:
        for seq, bs in beams:
            add(float(bs) / (m ** lp), seq[P:], False)
    ranked = sorted(hyps, key=lambda h: h[0])
    srt = [h[0] for h in ranked]
    margins.extend(b - a for a, b in zip(srt, srt[1:]))
    best_r = [ranked.pop() for _ in range(r)]
    return ([h[1] for h in best_r], [h[0] for h in best_r], [h[2] for h in best_r],
            min(margins), any_eos_hyp)


# name, num_beams, max_new_tokens, length_penalty, early_stopping, num_return_sequences, want_eos
# want_eos: "early" -> some returned sequence ends with eos before max_new_tokens; "any" -> some returned
# sequence ends with eos (possibly as the last allowed token); False -> no hypothesis ever ends with eos.
BEAM_SPECS = [
    ("beams2_lp1_esFalse_r1_eos", 2, 16, 1.0, False, 1, "early"),
    ("beams3_lp1_esTrue_r3_eos", 3, 16, 1.0, True, 3, "early"),
    ("beams4_lp1_esNever_r4_eos", 4, 16, 1.0, "never", 4, "any"),
    ("beams4_lp0_esFalse_r2_eos", 4, 14, 0.0, False, 2, "early"),
    ("beams3_lp2_esFalse_r3_eos", 3, 16, 2.0, False, 3, "any"),
    ("beams3_lpneg1_esFalse_r1_eos", 3, 12, -1.0, False, 1, "early"),
    ("beams3_lp2_esNever_r3_eos", 3, 18, 2.0, "never", 3, "any"),
    ("beams2_lpneg1_esTrue_r2_eos", 2, 12, -1.0, True, 2, "early"),
    ("beams4_lp1_esFalse_r4_eos", 4, 20, 1.0, False, 4, "early"),
    ("beams2_lp1_esFalse_r2_no_eos", 2, 12, 1.0, False, 2, False),
    ("beams4_lp1_esTrue_r1_no_eos", 4, 10, 1.0, True, 1, False),
    ("beams4_lp0_esNever_r4_no_eos", 4, 12, 0.0, "never", 4, False),
    ("beams3_lp1_esFalse_r3_prompt1_no_eos", 3, 20, 1.0, False, 3, False),
]


def beam_cases():
    model = load_model()
    eos = model.config.eos_token_id
    vocab = model.config.vocab_size
    npos = model.config.n_positions
    assert eos == 210 and vocab == 211 and npos == 40
    gen = torch.Generator().manual_seed(7070)
    cases = []
    for name, k, m, lp, es, r, want_eos in BEAM_SPECS:
        found = None
        for attempt in range(400):
            if attempt == 0 and name == BEAM_SPECS[0][0]:
                prompt = [111, 134, 113, 120, 115]  # reaches 210 greedily
            else:
                n = 1 if "prompt1" in name else int(torch.randint(1, 11, (1,), generator=gen))
                prompt = torch.randint(0, vocab - 1, (n,), generator=gen).tolist()
            if len(prompt) + m > npos:
                continue
            seqs, scores, stopped = hf_beam(model, prompt, k, m, lp, es, r, eos, pad=0)
            if want_eos == "any" and not any(stopped):
                continue
            if want_eos == "early" and not any(st and len(q) < m for q, st in zip(seqs, stopped)):
                continue
            mseqs, mscores, mstopped, margin, any_eos = my_beam(model, prompt, k, m, lp, es, r, eos)
            if not want_eos and any_eos:
                continue
            if margin < BEAM_MIN_MARGIN:
                continue
            # The independent implementation agrees.
            assert mseqs == seqs and mstopped == stopped, (name, prompt, seqs, mseqs)
            assert all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(scores, mscores)), \
                (name, scores, mscores)
            # pad_token_id == eos (210) gives the same result.
            s2, sc2, st2 = hf_beam(model, prompt, k, m, lp, es, r, eos, pad=eos)
            assert s2 == seqs and sc2 == scores and st2 == stopped, name
            found = (prompt, seqs, scores, stopped, margin)
            break
        if found is None:
            raise SystemExit(f"{name}: no suitable prompt found")
        prompt, seqs, scores, stopped, margin = found
        cases.append({
            "name": name, "prompt": prompt, "num_beams": k, "max_new_tokens": m,
            "length_penalty": lp, "early_stopping": es, "num_return_sequences": r,
            "eos_token_id": eos, "sequences": seqs, "sequences_scores": scores,
            "stopped_on_eos": stopped, "min_margin": margin,
            "transformers_version": transformers.__version__,
        })
        print(f"  {name}: prompt {prompt} (attempt {attempt}), lengths {[len(s) for s in seqs]}, "
              f"eos {stopped}, margin {margin:.2e}")
    return cases


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cases = processor_cases()
    write_json(OUT / "processors.json", cases)
    print(f"wrote processors.json ({len(cases)} cases)")
    large = large_cases()
    write_json(OUT / "processors_large.json", large)
    print(f"wrote processors_large.json ({len(large['cases'])} cases)")
    samp = sampling_cases()
    write_json(OUT / "sampling.json", samp)
    print(f"wrote sampling.json ({len(samp)} cases)")
    beams = beam_cases()
    write_json(OUT / "beam.json", beams)
    print(f"wrote beam.json ({len(beams)} cases)")
    (OUT / "BEAM_SEMANTICS.md").write_text(BEAM_SEMANTICS.format(version=transformers.__version__),
                                           encoding="utf-8")
    print("wrote BEAM_SEMANTICS.md")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"total {total} bytes")
    assert total < 1_500_000


if __name__ == "__main__":
    main()
