#!/usr/bin/env python3
"""Write the held-out KJV text (Ruth, Jonah, Philemon, 3 John, Jude) of the embedded models.

What: the exact held-out stream that tools/train_embedded.py evaluates its perplexity on, as text:
  "<|endoftext|>" + book_1 + "<|endoftext|>" + ... + book_5 + "<|endoftext|>", each book being its
  verses joined by "\n" (one verse a line, no chapter:verse prefix), in canonical order, with no
  trailing newline. Encoding this file with models/kjv-target/tokenizer.json gives the same ids as
  train_embedded.py's encode_stream (the special token splits the text at the book boundaries);
  --verify checks that.
Why: a fixed text for perplexity / KL measurements of quantized models (decode vs llama.cpp,
  e.g. `llama-perplexity -f models/kjv-heldout.txt -c 256`).
How: needs `bible` from Debian's bible-kjv package (apt-get install -y bible-kjv). No torch unless
  --verify (which also needs the packages of tools/requirements.txt).

    python tools/heldout_kjv.py [OUT.txt]          # default models/kjv-heldout.txt
    python tools/heldout_kjv.py --verify [OUT.txt]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    args = [a for a in sys.argv[1:] if a != "--verify"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args[0] if args else os.path.join(root, "models", "kjv-heldout.txt")
    if "--verify" in sys.argv:
        import train_embedded as te  # the training script itself: same reader, same constants
    else:
        # The same reader without importing torch: execute only the corpus part of the script.
        src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_embedded.py")).read()
        head = src[src.index("EOT = "):src.index("# ---", src.index("def read_bible"))]
        te = type(sys)("te")
        exec("import os, re, shutil, subprocess, sys, time\n" + head, te.__dict__)
    books = te.read_bible()
    held = ["\n".join(v) for b, v in books if b in te.HELD_OUT]
    text = te.EOT + te.EOT.join(held) + te.EOT
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {out}: {len(held)} books, {len(text.encode('utf-8'))} bytes")
    if "--verify" in sys.argv:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(root, "models", "kjv-target", "tokenizer.json"))
        eot = tok.token_to_id(te.EOT)
        want = te.encode_stream(tok, held, eot).tolist()
        got = tok.encode(text).ids
        assert got == want, "file text does not tokenize to train_embedded's held-out stream"
        print(f"verified: {len(got)} tokens, identical to train_embedded.encode_stream")


if __name__ == "__main__":
    main()
