#!/usr/bin/env bash
# Kernel launches per decode step on the tensor path (GPU backends), counted by cubecl itself.
#
#   tools/count_launches.sh [wgpu|cuda] [MODEL_DIR]
#
# Runs `generate --backend B --json` twice on the same prompt, for N and 2N new tokens, with
# cubecl's profiling logger at level "minimal" (it names each kernel as it is launched, without
# timing it). The difference between the two runs is N decode steps: warm-up, autotuning and the
# prefill cancel out. Prints launches per step, then the kernels of one step by name. Needs a build
# of the example with the backend's feature (cargo build --release --features wgpu --example
# generate); uses target/release/examples/generate, or $GENERATE.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:-wgpu}
MODEL=${2:-}
GENERATE=${GENERATE:-$PWD/target/release/examples/generate}
N=${N:-16}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() {
    local steps=$1 dir="$work/$1"
    mkdir -p "$dir"
    # cubecl reads cubecl.toml from the working directory.
    cat >"$dir/cubecl.toml" <<EOF
[profiling.logger]
level = "minimal"
file = "$dir/launches.log"
append = false
EOF
    (cd "$dir" && "$GENERATE" --backend "$BACKEND" ${MODEL:+--model "$MODEL"} --ignore-eos \
        --prompt "And God said, Let there be light" --max-new-tokens "$steps" --json >/dev/null)
    sed 's/^Executing //' "$dir/launches.log" >"$dir/names"
    wc -l <"$dir/names"
}

a=$(count "$N")
b=$(count "$((2 * N))")
echo "backend $BACKEND: $a launches for $N new tokens, $b for $((2 * N)):" \
    "$(((b - a) / N)) per decode step"
echo "kernels of one decode step (launches per step, kernel):"
awk -v n="$N" 'FNR == NR { a[$0]++; next } { b[$0]++ }
    END { for (k in b) { d = (b[k] - a[k]) / n; if (d > 0) printf "%6.2f  %s\n", d, k } }' \
    "$work/$N/names" "$work/$((2 * N))/names" | sort -rn
