#!/usr/bin/env python3
"""Train the two small embedded GPT-2 models (a target and its speculative-decoding draft) on the
King James Bible and save them, in the HuggingFace layout, under models/.

What it makes, under models/ (or --out):

  kjv-target/   GPT2LMHeadModel: vocab 4096, n_positions 256, n_embd 256, 4 layers, 4 heads,
                n_inner 1024, tied lm_head, bos/eos/pad = <|endoftext|>; stored as float16.
  kjv-draft/    GPT2LMHeadModel: same vocab / positions / eos, n_embd 128, 1 layer, 2 heads,
                n_inner 512, tied lm_head; distilled from the target; stored as float16.
  Each folder holds config.json, model.safetensors (save_pretrained(safe_serialization=True), keys
  "transformer.*", lm_head.weight omitted because tied), generation_config.json and
  tokenizer.json (the same file in both folders).
  README.md            short model card (written by this script).
  TRAINING_REPORT.md   the run's figures: held-out perplexities, draft acceptance rates, a sample.

How:

  Corpus: Debian's `bible-kjv` package (public domain; `apt-get install bible-kjv`), read with
    `bible -f "Gen1:1-Rev22:21"` (31,102 verses, one "Ge1:1 In the beginning ..." line each; the
    book/chapter:verse prefix is stripped and lines that `bible` wrapped are joined back).
    Held-out (validation) books: Ruth, Jonah, Philemon, 3 John, Jude. Training: the other 61.
    Each book is its verses joined by "\n"; books are separated by <|endoftext|> (the stream
    starts and ends with one as well).
  Tokenizer: byte-level BPE (`tokenizers`), vocab 4096, ByteLevel pre-tokenizer
    (add_prefix_space=False), ByteLevel decoder and post-processor, special token <|endoftext|> =
    id 0 (bos = eos = pad = 0). Trained on the training books only.
  Target: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices, grad clip 1.0), lr 1e-3 with linear
    warmup and cosine decay to 1e-4, dropout 0, batches of 8 random 256-token windows of the
    training stream (2048 tokens a step). 256 rather than 128 so that every position of the
    256-position model is trained (the held-out figures use 256-token windows).
  Draft: distilled from the (f32, trained) target: loss = KL(p_target || q_draft) at temperature 1
    over every position (plus --draft-ce times the plain cross-entropy; 0 by default), same
    optimiser and batch shape (its own seeded windows), peak lr 2e-3.
  The numbers of steps are chosen to fit the time budget (--budget-min, default 64 minutes of wall
    time for the whole script) from the measured time of a few throw-away steps (x1.1 for safety;
    printed as "plan"); the draft's count is re-planned from the time left when the target is done.
    To repeat a run exactly, pass the printed step counts: --target-steps N --draft-steps M.
    Everything is seeded (random, numpy, torch; data windows come from their own seeded
    generator), and runs on one CPU thread, so a rerun with the same step counts on the same
    machine/library versions gives the same weights.
  Evaluation (on the float16 files reloaded as float32): perplexity over the held-out stream cut
    into 256-token windows that overlap by one token (every token but the first is predicted
    once); draft acceptance against the target on the same windows: greedy = fraction of positions
    where argmax(draft) == argmax(target); temperature 1 = mean over positions of
    sum_x min(p_target(x), q_draft(x)) (the expected acceptance rate of speculative sampling).
    A 40-token greedy continuation of "And God said" from the target.

How to run (from the repository root; needs `bible` from the bible-kjv package and the packages
of tools/requirements.txt):

    python tools/train_embedded.py                 # full run, writes models/
    python tools/train_embedded.py --quick --out /tmp/kjv-quick   # smoke test, under a minute

Expected time: about 64 minutes on one CPU thread (the budget is filled, not merely bounded), and
never more than 70: if the machine slows down mid-run, the target stops early when it overruns its
plan by more than 5% of the budget, and the draft when the script would end after 69 minutes
(--hard-limit-min); the report says so. It always uses a single thread.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

EOT = "<|endoftext|>"
N_VERSES = 31102
HELD_OUT = {"Ruth": "Ruth", "Jonah": "Jonah", "Phmn": "Philemon", "3Jn": "3 John", "Jude": "Jude"}
REF = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")

T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------- corpus


def read_bible():
    """Return [(book_abbrev, [verse text, ...]), ...] in canonical order."""
    if shutil.which("bible") is None:
        sys.exit("error: the `bible` program was not found. Install Debian's bible-kjv package "
                 "(apt-get install bible-kjv) and rerun.")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], env=env, capture_output=True,
                         text=True, check=True).stdout
    books = []
    last = None
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        m = REF.match(line)
        if m:
            book = m.group(1)
            if not books or books[-1][0] != book:
                books.append((book, []))
            books[-1][1].append(m.group(4).strip())
            last = m
        else:  # a continuation of a verse that `bible` wrapped
            if last is None:
                sys.exit(f"error: unexpected first line of `bible` output: {line!r}")
            books[-1][1][-1] += " " + line
    n = sum(len(v) for _, v in books)
    if n != N_VERSES or len(books) != 66:
        sys.exit(f"error: expected {N_VERSES} verses in 66 books from `bible`, got {n} in "
                 f"{len(books)}")
    missing = set(HELD_OUT) - {b for b, _ in books}
    if missing:
        sys.exit(f"error: held-out books {missing} not found in the `bible` output")
    return books


# -------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def encode_stream(tok, book_texts, eot_id):
    ids = [eot_id]
    for text in book_texts:
        ids.extend(tok.encode(text).ids)
        ids.append(eot_id)
    return torch.tensor(ids, dtype=torch.long)


# ----------------------------------------------------------------------------------------- models


def target_config(eot_id, vocab):
    return GPT2Config(vocab_size=vocab, n_positions=256, n_embd=256, n_layer=4, n_head=4,
                      n_inner=1024, bos_token_id=eot_id, eos_token_id=eot_id,
                      tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def draft_config(eot_id, vocab):
    return GPT2Config(vocab_size=vocab, n_positions=256, n_embd=128, n_layer=1, n_head=2,
                      n_inner=512, bos_token_id=eot_id, eos_token_id=eot_id,
                      tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_model(cfg):
    m = GPT2LMHeadModel(cfg)
    m.train()
    return m


def make_optimizer(model, lr, wd):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step, total, peak, warmup, floor_frac=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batch(stream, gen, bsz, seq):
    starts = torch.randint(0, len(stream) - seq - 1, (bsz,), generator=gen)
    x = torch.stack([stream[s:s + seq] for s in starts.tolist()])
    y = torch.stack([stream[s + 1:s + seq + 1] for s in starts.tolist()])
    return x, y


def ce_loss(model, x, y):
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def target_step(model, opt, x, y, lr, clip=1.0):
    for g in opt.param_groups:
        g["lr"] = lr
    loss = ce_loss(model, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def draft_step(draft, target, opt, x, y, lr, ce_weight, clip=1.0):
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.no_grad():
        logp = F.log_softmax(target(input_ids=x).logits.float(), dim=-1)
    logits = draft(input_ids=x).logits
    logq = F.log_softmax(logits, dim=-1)
    v = logits.size(-1)
    kl = F.kl_div(logq.reshape(-1, v), logp.reshape(-1, v), log_target=True,
                  reduction="batchmean")
    loss = kl
    ce = None
    if ce_weight > 0:
        ce = F.nll_loss(logq.reshape(-1, v), y.reshape(-1))
        loss = kl + ce_weight * ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(draft.parameters(), clip)
    opt.step()
    return kl.item()


# ------------------------------------------------------------------------------------------- eval


def eval_windows(stream, win=256):
    """256-token windows overlapping by one token: every token after the first is predicted once."""
    out = []
    s = 0
    n = len(stream)
    while s < n - 1:
        out.append(stream[s:min(s + win, n)])
        s += win - 1
    return out


@torch.no_grad()
def held_out_nll(model, windows):
    model.eval()
    tot, cnt = 0.0, 0
    for w in windows:
        logits = model(input_ids=w[None, :-1]).logits[0].float()
        tot += F.cross_entropy(logits, w[1:], reduction="sum").item()
        cnt += len(w) - 1
    return tot / cnt


@torch.no_grad()
def acceptance(target, draft, windows):
    target.eval()
    draft.eval()
    greedy, soft, cnt = 0.0, 0.0, 0
    for w in windows:
        lp = target(input_ids=w[None, :-1]).logits[0].float()
        lq = draft(input_ids=w[None, :-1]).logits[0].float()
        greedy += (lp.argmax(-1) == lq.argmax(-1)).sum().item()
        soft += torch.minimum(lp.softmax(-1), lq.softmax(-1)).sum(-1).sum().item()
        cnt += lp.size(0)
    return greedy / cnt, soft / cnt


@torch.no_grad()
def greedy_sample(model, tok, prompt, n_new, eot_id):
    model.eval()
    ids = torch.tensor([tok.encode(prompt).ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                         do_sample=False, eos_token_id=eot_id, pad_token_id=eot_id)
    return tok.decode(out[0].tolist(), skip_special_tokens=False)


# -------------------------------------------------------------------------------------------- save


def save_model(model, path, tok_path, eot_id):
    os.makedirs(path, exist_ok=True)
    m = model.half()
    g = m.generation_config
    g.bos_token_id = eot_id
    g.eos_token_id = eot_id
    g.pad_token_id = eot_id
    g.do_sample = False
    m.save_pretrained(path, safe_serialization=True)
    shutil.copyfile(tok_path, os.path.join(path, "tokenizer.json"))
    model.float()


def n_params(model):
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def file_sizes(out):
    rows = []
    for d in sorted(os.listdir(out)):
        p = os.path.join(out, d)
        if os.path.isdir(p):
            for f in sorted(os.listdir(p)):
                rows.append((f"{d}/{f}", os.path.getsize(os.path.join(p, f))))
    return rows


# -------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "models"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--budget-min", type=float, default=64.0,
                    help="planned wall time of the whole script, minutes (default 64)")
    ap.add_argument("--hard-limit-min", type=float, default=69.0,
                    help="training stops early so that the script ends before this (default 69)")
    ap.add_argument("--safety", type=float, default=1.1,
                    help="factor on the measured step times when planning (default 1.1)")
    ap.add_argument("--draft-frac", type=float, default=0.25,
                    help="share of the training time given to the draft (default 0.25)")
    ap.add_argument("--target-steps", type=int, default=None, help="override the planned count")
    ap.add_argument("--draft-steps", type=int, default=None, help="override the planned count")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--target-lr", type=float, default=1e-3)
    ap.add_argument("--draft-lr", type=float, default=2e-3)
    ap.add_argument("--draft-ce", type=float, default=0.0, help="weight of CE in the draft loss")
    ap.add_argument("--quick", action="store_true", help="smoke test: a few steps only")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    seed_all(args.seed)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:
        pass
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers "
        f"{tokenizers.__version__}, threads {torch.get_num_threads()}, out {out}")

    # corpus
    books = read_bible()
    train_books = [(b, v) for b, v in books if b not in HELD_OUT]
    held_books = [(b, v) for b, v in books if b in HELD_OUT]
    train_texts = ["\n".join(v) for _, v in train_books]
    held_texts = ["\n".join(v) for _, v in held_books]
    log(f"corpus: {len(books)} books; train {len(train_books)} books "
        f"{sum(len(v) for _, v in train_books)} verses {sum(map(len, train_texts))} chars; held-out "
        f"{[b for b, _ in held_books]} {sum(len(v) for _, v in held_books)} verses")

    # tokenizer
    tok = train_tokenizer(train_texts, 4096)
    eot_id = tok.token_to_id(EOT)
    vocab = tok.get_vocab_size()
    os.makedirs(out, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix="train_embedded_")  # nothing half-made lands in --out
    tmp_tok = os.path.join(tmp_dir, "tokenizer.json")
    tok.save(tmp_tok)
    tok = Tokenizer.from_file(tmp_tok)  # use exactly what is saved
    train_stream = encode_stream(tok, train_texts, eot_id)
    held_stream = encode_stream(tok, held_texts, eot_id)
    assert tok.decode(tok.encode(held_texts[0]).ids) == held_texts[0], "tokenizer round trip"
    log(f"tokenizer: vocab {vocab}, {EOT} id {eot_id}; train stream {len(train_stream)} tokens, "
        f"held-out {len(held_stream)} tokens ({sum(map(len, train_texts)) / len(train_stream):.2f}"
        f" chars/token)")
    windows = eval_windows(held_stream, 256)

    bsz, seq = args.batch, args.seq

    # plan: time a few throw-away steps of each phase
    if args.quick:
        t_steps, d_steps = args.target_steps or 4, args.draft_steps or 4
        t_target, t_draft, reserve = 0.0, 0.0, 0.0
        log(f"plan (quick): target {t_steps} steps, draft {d_steps} steps")
    else:
        pgen = torch.Generator().manual_seed(999)
        tm = make_model(target_config(eot_id, vocab))
        dm = make_model(draft_config(eot_id, vocab))
        topt = make_optimizer(tm, 1e-4, 0.1)
        dopt = make_optimizer(dm, 1e-4, 0.1)
        for i in range(8):
            if i == 3:
                t1 = time.time()
            target_step(tm, topt, *batch(train_stream, pgen, bsz, seq), 1e-4)
        t_target = (time.time() - t1) / 5
        tm.train()
        for i in range(8):
            if i == 3:
                t1 = time.time()
            draft_step(dm, tm, dopt, *batch(train_stream, pgen, bsz, seq), 1e-4, args.draft_ce)
        t_draft = (time.time() - t1) / 5
        t1 = time.time()
        held_out_nll(dm, windows)
        t_eval_d = time.time() - t1
        t1 = time.time()
        held_out_nll(tm, windows)
        t_eval_t = time.time() - t1
        del tm, dm, topt, dopt
        # final evaluation: 2 nll passes + acceptance (one of each) + sample + periodic evals (4 x)
        reserve = 6 * (t_eval_t + t_eval_d) + 60
        remain = args.budget_min * 60 - (time.time() - T0) - reserve
        t_steps = args.target_steps or int(remain * (1 - args.draft_frac) / (args.safety * t_target))
        d_steps = args.draft_steps or int(remain * args.draft_frac / (args.safety * t_draft))
        log(f"plan: {t_target:.3f} s/target step, {t_draft:.3f} s/draft step, held-out eval "
            f"{t_eval_t:.1f}+{t_eval_d:.1f} s; training time left {remain / 60:.1f} min -> "
            f"target {t_steps} steps ({args.safety * t_steps * t_target / 60:.1f} min, "
            f"{t_steps * bsz * seq / len(train_stream):.1f} epochs), draft {d_steps} steps "
            f"({args.safety * d_steps * t_draft / 60:.1f} min; re-planned when the target is done)"
            f"; batch {bsz}x{seq} tokens")
    # guard against a machine that gets slower mid-run (the step counts are fixed up front for the
    # lr schedule): the target stops early (and says so) if it overruns its plan by more than 5%
    # of the budget; the draft's step count is re-planned from the time actually left, and it
    # stops early if the script would otherwise end after --hard-limit-min.
    guard = not args.quick and args.target_steps is None and args.draft_steps is None
    t_deadline = (args.safety * t_steps * t_target + 0.05 * args.budget_min * 60) if guard \
        else float("inf")
    stopped = []
    log_every = 1 if args.quick else 50
    eval_every = max(1, t_steps // 4)

    # ----- target
    seed_all(args.seed)
    target = make_model(target_config(eot_id, vocab))
    opt = make_optimizer(target, args.target_lr, 0.1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    warm = max(1, min(200, t_steps // 20))
    log(f"target: {n_params(target):,} parameters, {t_steps} steps, warmup {warm}, "
        f"peak lr {args.target_lr}")
    t_start, run = time.time(), 0.0
    target_losses = []
    for step in range(t_steps):
        lr = lr_at(step, t_steps, args.target_lr, warm)
        loss = target_step(target, opt, *batch(train_stream, gen, bsz, seq), lr)
        target_losses.append(loss)
        run = loss if step == 0 else 0.98 * run + 0.02 * loss
        if (step + 1) % log_every == 0 or step + 1 == t_steps:
            el = time.time() - t_start
            log(f"target step {step + 1}/{t_steps} loss {loss:.4f} (ema {run:.4f}) lr {lr:.2e} "
                f"{el / (step + 1):.3f} s/step, eta {el / (step + 1) * (t_steps - step - 1) / 60:.1f}"
                f" min")
        if time.time() - t_start > t_deadline and step + 1 < t_steps:
            stopped.append(f"target stopped early at step {step + 1} of {t_steps} (time guard)")
            log("WARNING:", stopped[-1])
            break
        if (step + 1) % eval_every == 0 and step + 1 < t_steps:
            nll = held_out_nll(target, windows)
            target.train()
            log(f"target step {step + 1}: held-out loss {nll:.4f} ppl {math.exp(nll):.2f}")
    target_time = time.time() - t_start
    t_done = len(target_losses)
    target_final = float(np.mean(target_losses[-50:]))
    log(f"target done in {target_time / 60:.1f} min; mean train loss of last 50 steps "
        f"{target_final:.4f}")
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)

    # ----- draft
    if guard:  # re-plan from the time left, at the speed the target phase actually ran
        slow = (target_time / t_done) / t_target
        left = args.budget_min * 60 - (time.time() - T0) - reserve
        d_steps = max(100, int(left / (args.safety * t_draft * slow)))
        log(f"draft re-plan: target ran at {slow:.2f}x the measured step time; "
            f"{left / 60:.1f} min left -> draft {d_steps} steps")
    seed_all(args.seed + 2)
    draft = make_model(draft_config(eot_id, vocab))
    dopt = make_optimizer(draft, args.draft_lr, 0.1)
    gen = torch.Generator().manual_seed(args.seed + 3)
    warm = max(1, min(200, d_steps // 20))
    log(f"draft: {n_params(draft):,} parameters, {d_steps} steps, warmup {warm}, "
        f"peak lr {args.draft_lr}, CE weight {args.draft_ce}")
    t_start = time.time()
    d_deadline = (T0 + args.hard_limit_min * 60 - reserve) if guard else float("inf")
    draft_kls = []
    eval_every = max(1, d_steps // 2)
    for step in range(d_steps):
        lr = lr_at(step, d_steps, args.draft_lr, warm)
        kl = draft_step(draft, target, dopt, *batch(train_stream, gen, bsz, seq), lr,
                        args.draft_ce)
        draft_kls.append(kl)
        run = kl if step == 0 else 0.98 * run + 0.02 * kl
        if (step + 1) % log_every == 0 or step + 1 == d_steps:
            el = time.time() - t_start
            log(f"draft step {step + 1}/{d_steps} KL {kl:.4f} (ema {run:.4f}) lr {lr:.2e} "
                f"{el / (step + 1):.3f} s/step, eta {el / (step + 1) * (d_steps - step - 1) / 60:.1f}"
                f" min")
        if time.time() > d_deadline and step + 1 < d_steps:
            stopped.append(f"draft stopped early at step {step + 1} of {d_steps} (time guard)")
            log("WARNING:", stopped[-1])
            break
        if (step + 1) % eval_every == 0 and step + 1 < d_steps:
            nll = held_out_nll(draft, windows)
            draft.train()
            log(f"draft step {step + 1}: held-out loss {nll:.4f} ppl {math.exp(nll):.2f}")
    draft_time = time.time() - t_start
    d_done = len(draft_kls)
    draft_final = float(np.mean(draft_kls[-50:]))
    log(f"draft done in {draft_time / 60:.1f} min; mean KL of last 50 steps {draft_final:.4f}")

    # ----- save (float16)
    tdir, ddir = os.path.join(out, "kjv-target"), os.path.join(out, "kjv-draft")
    for d in (tdir, ddir):
        if os.path.isdir(d):
            shutil.rmtree(d)
    save_model(target, tdir, tmp_tok, eot_id)
    save_model(draft, ddir, tmp_tok, eot_id)
    shutil.rmtree(tmp_dir)
    tp, dp = n_params(target), n_params(draft)
    del target, draft

    # ----- evaluate the saved files (f16 -> f32)
    T = GPT2LMHeadModel.from_pretrained(tdir, torch_dtype=torch.float32)
    D = GPT2LMHeadModel.from_pretrained(ddir, torch_dtype=torch.float32)
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    t_nll, d_nll = held_out_nll(T, windows), held_out_nll(D, windows)
    acc_greedy, acc_soft = acceptance(T, D, windows)
    prompt = "And God said"
    sample = greedy_sample(T, tok, prompt, 40, eot_id)
    draft_sample = greedy_sample(D, tok, prompt, 40, eot_id)
    n_pos = sum(len(w) - 1 for w in windows)
    sizes = file_sizes(out)
    total = sum(s for _, s in sizes)
    elapsed = time.time() - T0

    held_names = ", ".join(HELD_OUT[b] for b, _ in held_books)
    cmd = (f"python tools/train_embedded.py --seed {args.seed} --target-steps {t_steps} "
           f"--draft-steps {d_steps}")
    report = f"""# Training report: kjv-target and kjv-draft

Made by `tools/train_embedded.py` (torch {torch.__version__}, transformers
{transformers.__version__}, tokenizers {tokenizers.__version__}; one CPU thread; seed {args.seed}).
Total wall time {elapsed / 60:.1f} min.

- Corpus: King James Bible from Debian's `bible-kjv`; {len(train_books)} training books,
  {len(train_stream):,} tokens; held out: {held_names} ({len(held_stream):,} tokens).
- Tokenizer: byte-level BPE, vocab {vocab}; `{EOT}` = id {eot_id} (bos = eos = pad).
- Target: {tp:,} parameters; {t_done} steps of {bsz}x{seq} tokens ({target_time / 60:.1f} min);
  mean train loss over the last 50 steps {target_final:.4f}.
- Draft: {dp:,} parameters; {d_done} distillation steps ({draft_time / 60:.1f} min);
  mean KL(target || draft) over the last 50 steps {draft_final:.4f}.
- To repeat exactly: `{cmd}`
{"".join(f"- NOTE: {x}" + chr(10) for x in stopped)}
## Held-out figures (float16 files reloaded as float32; {len(windows)} windows of up to 256 tokens,
{n_pos:,} predicted positions)

| model | held-out loss (nats/token) | perplexity |
|---|---|---|
| kjv-target | {t_nll:.4f} | {math.exp(t_nll):.2f} |
| kjv-draft | {d_nll:.4f} | {math.exp(d_nll):.2f} |

Draft acceptance against the target (same held-out contexts):

- greedy (argmax(draft) == argmax(target)): {acc_greedy:.4f}
- temperature 1 (mean of sum_x min(p_target(x), q_draft(x))): {acc_soft:.4f}

## Greedy sample (40 new tokens after "{prompt}")

kjv-target:

```
{sample}
```

kjv-draft:

```
{draft_sample}
```

## Files

| file | bytes |
|---|---|
""" + "".join(f"| {f} | {s:,} |\n" for f, s in sizes) + f"| total | {total:,} |\n"

    readme = f"""# Embedded models: kjv-target and kjv-draft

Two small GPT-2 language models trained from scratch on the King James Bible (public domain;
the text of Debian's `bible-kjv` package), for examples and tests of speculative decoding:
a target and a draft distilled from it. They share one tokenizer.

| folder | layers | n_embd | heads | n_inner | n_positions | parameters | dtype |
|---|---|---|---|---|---|---|---|
| `kjv-target/` | 4 | 256 | 4 | 1024 | 256 | {tp:,} | float16 |
| `kjv-draft/` | 1 | 128 | 2 | 512 | 256 | {dp:,} | float16 |

- Tokenizer (`tokenizer.json`, identical in both folders): byte-level BPE, vocab {vocab}, no
  prefix space; `{EOT}` = id {eot_id} is bos, eos and pad.
- Corpus: verses without their references, one per line; books separated by `{EOT}`.
  Held out from training: {held_names}.
- Training: target by next-token cross-entropy ({t_done} steps x {bsz}x{seq} tokens, AdamW,
  cosine lr); draft by KL(target || draft) distillation ({d_done} steps).
- Held-out perplexity: target {math.exp(t_nll):.2f}, draft {math.exp(d_nll):.2f}.
  Draft acceptance vs target on held-out text: greedy {acc_greedy:.3f}, temperature 1
  {acc_soft:.3f}. Details and a sample: `TRAINING_REPORT.md`.
- Files: `config.json`, `model.safetensors` (tied lm_head, keys `transformer.*`),
  `generation_config.json`, `tokenizer.json`; {total / 1e6:.1f} MB in all.
- Rebuild (about {args.budget_min:.0f} min on one CPU thread; needs `bible` from bible-kjv):
  `python tools/train_embedded.py` (step counts are fitted to the machine's speed; for this exact
  run: `{cmd}`).
"""
    with open(os.path.join(out, "TRAINING_REPORT.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)
    print(report, flush=True)
    log(f"done in {elapsed / 60:.1f} min; {out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
