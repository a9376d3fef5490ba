#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, starting from the seeds in tests/fuzz/corpus and
# keeping what it finds in BUILD/corpus. Exits non-zero on the first crash or broken invariant.
set -euo pipefail
build=${1:?build dir}
seconds=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
targets="fuzz_command_parser fuzz_data_reader fuzz_config_loader fuzz_reply_parser fuzz_sasl
         fuzz_header_block fuzz_lua_sandbox"
for target in $targets; do
    corpus="$build/corpus/$target"
    mkdir -p "$corpus"
    echo "fuzz: $target for ${seconds}s"
    seeds=("$here/corpus/$target")
    # The sandbox starts from real policies too: the shipped scripts and the benchmark's.
    if [ "$target" = fuzz_lua_sandbox ]; then seeds+=("$here/../../scripts" "$here/../bench/lua"); fi
    "$build/tests/fuzz/$target" -max_total_time="$seconds" -max_len=4096 -print_final_stats=0 \
        -artifact_prefix="$build/$target-" "$corpus" "${seeds[@]}" 2>"$build/$target.log" \
        || { tail -40 "$build/$target.log"; echo "fuzz: $target FAILED"; exit 1; }
    grep -E '^(#[0-9]+\s+DONE|Done)' "$build/$target.log" | tail -1 || true
done
echo "fuzz: $(echo $targets | wc -w) passed, 0 failed"
