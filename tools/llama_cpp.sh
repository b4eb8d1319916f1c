#!/usr/bin/env bash
# Fetch and build llama.cpp (the copy vendored in llama-cpp-python 0.3.36; needs cmake, e.g. from
# `pip install cmake`), and convert HF GPT-2
# folders to GGUF with it: the llama.cpp side of decode's side-by-side comparisons.
#
# Why: decode is compared with llama.cpp on the same models (speed: llama-bench /
#   llama-batched-bench; numerics: GGUF files whose q8_0/q4_0 blocks decode must reproduce). No
#   llama.cpp code lives in this repository; this script fetches it from PyPI (the sdist of
#   llama-cpp-python 0.3.36 carries llama.cpp under vendor/llama.cpp) and builds it locally.
#
# Usage (from anywhere):
#   tools/llama_cpp.sh [setup]            download + extract + build (each step skipped if done)
#   tools/llama_cpp.sh convert HF_DIR OUT.gguf f32|f16|q8_0|q4_0
#   tools/llama_cpp.sh dir                print the llama.cpp source folder
# Environment:
#   LLAMA_WORK=/tmp/llama   work folder (sdist/, llama_cpp_python-0.3.36/)
#   AVX2_ONLY=1             also build build-avx2/ (GGML_NATIVE=OFF: AVX, AVX2, FMA, F16C, and ggml's
#                           default SSE4.2/BMI2; no AVX-512), to compare on the AVX2 code path
#   NO_AMX=1                also build build-noamx/ (GGML_NATIVE=OFF: AVX2, AVX-VNNI and AVX-512 F/CD/VL/
#                           DQ/BW/VBMI/VNNI/BF16, no AMX), for a machine whose CPU reports AMX that
#                           its VM cannot run (seen on a KVM Xeon: the native build dies in
#                           ldtilecfg on its first product)
#   JOBS=2                  parallel build jobs
# Binaries: $LLAMA_WORK/llama_cpp_python-0.3.36/vendor/llama.cpp/build{,-avx2,-noamx}/bin/
#   llama-bench, llama-batched-bench, llama-quantize, llama-perplexity.
# convert needs python with torch, transformers, safetensors, numpy, sentencepiece (see
#   tools/requirements.txt); it runs tools/convert_gguf.py (llama.cpp's convert_hf_to_gguf.py,
#   patched to accept our own byte-level BPE tokenizers). f32/f16/q8_0 come from the converter
#   itself; q4_0 is f32 -> `llama-quantize --pure ... Q4_0`, so that every 2-D weight (token
#   embedding included) is Q4_0, with no Q6_K output layer or other k-quant mixture.
set -euo pipefail

VERSION=0.3.36
WORK=${LLAMA_WORK:-/tmp/llama}
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
JOBS=${JOBS:-2}
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGETS=(llama-bench llama-batched-bench llama-quantize llama-perplexity)

fetch() {
    [[ -f $SRC/CMakeLists.txt ]] && return
    mkdir -p "$WORK/sdist"
    local tgz=$WORK/sdist/llama_cpp_python-$VERSION.tar.gz
    [[ -f $tgz ]] || pip download --no-binary llama-cpp-python --no-deps "llama-cpp-python==$VERSION" \
        -d "$WORK/sdist"
    tar -xzf "$tgz" -C "$WORK"
}

build() {  # build DIR CMAKE_ARGS...
    local dir=$1; shift
    command -v cmake >/dev/null || { echo "llama.cpp builds with cmake: pip install cmake" >&2; exit 1; }
    local t missing=0
    for t in "${TARGETS[@]}"; do [[ -x $SRC/$dir/bin/$t ]] || missing=1; done
    [[ $missing == 0 ]] && return
    cmake -S "$SRC" -B "$SRC/$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF "$@"
    cmake --build "$SRC/$dir" -j"$JOBS" --target "${TARGETS[@]}"
}

setup() {
    fetch
    build build -DGGML_NATIVE=ON
    if [[ ${AVX2_ONLY:-0} == 1 ]]; then
        build build-avx2 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_AVX512=OFF \
            -DGGML_FMA=ON -DGGML_F16C=ON
    fi
    if [[ ${NO_AMX:-0} == 1 ]]; then
        build build-noamx -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_AVX_VNNI=ON \
            -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON \
            -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
            -DGGML_AMX_BF16=OFF
    fi
    echo "llama.cpp $VERSION (llama-cpp-python sdist) built in $SRC"
}

convert() {  # convert HF_DIR OUT.gguf TYPE
    [[ $# == 3 ]] || { echo "usage: $0 convert HF_DIR OUT.gguf f32|f16|q8_0|q4_0" >&2; exit 2; }
    local hf=$1 out=$2 type=$3
    fetch
    export LLAMA_CPP_DIR=$SRC
    mkdir -p "$(dirname "$out")"
    case $type in
        f32|f16|q8_0) python3 "$TOOLS_DIR/convert_gguf.py" "$hf" --outfile "$out" --outtype "$type" ;;
        q4_0)
            build build -DGGML_NATIVE=ON
            local tmp; tmp=$(mktemp --suffix=.gguf)
            python3 "$TOOLS_DIR/convert_gguf.py" "$hf" --outfile "$tmp" --outtype f32
            "$SRC/build/bin/llama-quantize" --pure "$tmp" "$out" Q4_0
            rm -f "$tmp" ;;
        *) echo "unknown type $type (f32|f16|q8_0|q4_0)" >&2; exit 2 ;;
    esac
}

case ${1:-setup} in
    setup) setup ;;
    convert) shift; convert "$@" ;;
    dir) echo "$SRC" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
