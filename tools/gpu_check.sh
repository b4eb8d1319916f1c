#!/usr/bin/env bash
# The CUDA check in two halves, for a GPU machine that has no Rust toolchain and no network.
#
#   tools/gpu_check.sh build   # here, with cargo: builds the `--features cuda` test, bench and
#                              # example binaries into target/gpu/ (stripped, gzipped: ~42 MB)
#   tools/gpu_check.sh run     # there, in a copy of this repository with target/gpu/ carried along:
#                              # fidelity tests on CUDA, then GPT-2-small tok/s (f32/f16/bf16,
#                              # batch 1 and 8), then `generate --backend cuda` end to end
#
# `run` writes everything it prints to $OUT (or target/gpu/out/) as well: check.log, bench.log and
# generate.json. Steps that fail are reported and the script goes on, so one run gives every figure;
# it exits non-zero if any failed. `BACKEND=wgpu tools/gpu_check.sh build|run` does the same with
# the wgpu backend (e.g. on lavapipe, or on a Vulkan GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKEND=${BACKEND:-cuda}
BUNDLE=target/gpu
TESTS=(fidelity speculative beam)

build() {
    set -e
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
    local json
    json=$(cargo test --release -p decode-models --features "$BACKEND" --no-run \
        --message-format=json "${TESTS[@]/#/--test=}")
    for t in "${TESTS[@]}"; do
        python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])' "$t" <<<"$json" | while read -r exe; do cp "$exe" "$BUNDLE/test-$t"; done
    done
    cargo build --release --features "$BACKEND" --example generate
    cp target/release/examples/generate "$BUNDLE/generate"
    json=$(cargo bench --features "$BACKEND" --bench gpt2 --no-run --message-format=json)
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpt2":
        print(m["executable"])' <<<"$json" | while read -r exe; do cp "$exe" "$BUNDLE/bench-gpt2"; done
    strip "$BUNDLE"/* 2>/dev/null || true
    # One gzip archive: 5 binaries of ~33 MB each compress to ~42 MB, under the 64 MiB a carried
    # folder may hold.
    (cd "$BUNDLE" && tar czf binaries.tar.gz test-* bench-gpt2 generate && rm test-* bench-gpt2 generate)
    # The test binaries find their fixtures under the path they were built in.
    echo "$ROOT" > "$BUNDLE/built-in"
    echo "$BACKEND" > "$BUNDLE/backend"
    ls -la "$BUNDLE"
    du -sh "$BUNDLE"
}

# Stops with one line when the machine lacks what the backend loads at run time.
preflight() {
    [ "$BACKEND" = cuda ] || return 0
    local libs dirs=${LD_LIBRARY_PATH:-}
    libs=$(ldconfig -p)
    for d in ${dirs//:/ }; do libs+=" $(ls "$d" 2>/dev/null)"; done
    if ! grep -q libcuda.so <<<"$libs"; then
        echo "no libcuda on this machine: the CUDA check needs an NVIDIA driver"
        exit 1
    fi
    if ! grep -q libnvrtc <<<"$libs"; then
        echo "no libnvrtc on the library path: install the CUDA toolkit, or"
        echo "pip install nvidia-cuda-nvrtc-cu12 and add its lib/ folder to LD_LIBRARY_PATH"
        exit 1
    fi
}

run() {
    local out=${OUT:-$BUNDLE/out}
    mkdir -p "$out"
    local built failed=0
    built=$(cat "$BUNDLE/built-in")
    BACKEND=$(cat "$BUNDLE/backend")
    [ -x "$BUNDLE/generate" ] || tar xzf "$BUNDLE/binaries.tar.gz" -C "$BUNDLE"
    preflight
    # The test binaries read their fixtures under the build machine's checkout path: point it here.
    if [ "$built" != "$ROOT" ] && [ ! -e "$built" ]; then
        mkdir -p "$(dirname "$built")" && ln -s "$ROOT" "$built"
    fi
    {
        echo "== machine"
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
        lscpu | grep -E "Model name|^CPU\(s\)" || true
    } 2>&1 | tee "$out/check.log"
    for t in "${TESTS[@]}"; do
        echo "== test $t ($BACKEND: the tests whose names contain it, one at a time)" | tee -a "$out/check.log"
        if ! "$BUNDLE/test-$t" "$BACKEND" --test-threads 1 --nocapture 2>&1 | tee -a "$out/check.log"; then
            echo "FAILED: test $t" | tee -a "$out/check.log"
            failed=1
        fi
    done
    echo "== bench (GPT-2 small, random weights)" | tee "$out/bench.log"
    if ! "$BUNDLE/bench-gpt2" --bench "tensor-$BACKEND" --warm-up-time 2 --measurement-time 4 \
        2>&1 | tee -a "$out/bench.log"; then
        echo "FAILED: bench" | tee -a "$out/bench.log"
        failed=1
    fi
    echo "== generate --backend $BACKEND (the embedded KJV model, 64 tokens)"
    if ! "$BUNDLE/generate" --backend "$BACKEND" --prompt "And God said" --max-new-tokens 64 \
        --json >"$out/generate.json"; then
        echo "FAILED: generate"
        failed=1
    fi
    cat "$out/generate.json"
    echo
    if [ "$failed" = 0 ]; then echo "== all passed"; else echo "== some steps FAILED"; fi
    return "$failed"
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *) sed -n 2,13p "$0"; exit 2 ;;
esac
