#!/usr/bin/env bash
# Runs cargo-fuzz targets for IDEMDB_FUZZ_SECONDS seconds each (default 60), and fails if any
# of them finds a crash. Usage: fuzz/run.sh [TARGET...] (default: every target).
#
# The committed corpus fuzz/corpus/<target>/ only seeds the run: libFuzzer writes new inputs
# to the first corpus directory it is given, which here is a scratch directory, so the
# committed corpus never grows. A crash input lands in fuzz/artifacts/<target>/; once the
# bug is fixed, commit it there and tests/fuzz_corpora.rs replays it under `cargo test`.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The sanitizer flags it passes are
# nightly-only, so this runs on the stable toolchain with RUSTC_BOOTSTRAP=1. Exit status: 0
# no crash, 1 a crash (or a timeout or out-of-memory input), 3 the targets did not build.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${IDEMDB_FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

started=$SECONDS
# The checks themselves are compiled (and linted) by the main build with --all-features, so
# a failure here is the fuzz toolchain's (sanitizer runtime, libFuzzer's C++ build): exit 3
# lets .ci/run report fuzzing as skipped rather than failed.
cargo fuzz build >"$scratch/build.log" 2>&1 || {
    tail -n 60 "$scratch/build.log"
    echo "fuzz: building the fuzz targets failed"
    exit 3
}
echo "fuzz: built the targets in $((SECONDS - started)) s"

# Targets run side by side, IDEMDB_FUZZ_JOBS at a time (default: one per core): each is
# one libFuzzer process on one core.
jobs=${IDEMDB_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}

# Runs one target; leaves its summary line in $scratch/<target>.summary and its status
# (ok or FAILED) in $scratch/<target>.status. Always succeeds itself.
run_target() {
    local target=$1
    local log="$scratch/$target.log"
    local started=$SECONDS status=ok
    mkdir -p "$scratch/$target" "artifacts/$target"
    cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -use_value_profile=1 \
        -print_final_stats=1 >"$log" 2>&1 || status=FAILED
    local elapsed=$((SECONDS - started))
    # libFuzzer's last status line ("#N ... cov: C ft: F corp: K/... exec/s: E") and its
    # final count ("Done N runs in S second(s)").
    local last runs cov ft corp execs
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    runs=$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || true)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    corp=$(grep -oE 'corp: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    execs=$(grep -oE 'exec/s: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    if [ "$status" = ok ]; then
        echo "fuzz $target: ok, ${elapsed} s, ${runs:-?} runs (${execs:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}" \
            >"$scratch/$target.summary"
    else
        echo "fuzz $target: FAILED after ${elapsed} s; the crash input is in fuzz/artifacts/$target/" \
            >"$scratch/$target.summary"
    fi
    echo "$status" >"$scratch/$target.status"
}

for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_target "$target" &
done
wait

failed=()
for target in "${targets[@]}"; do
    if [ "$(cat "$scratch/$target.status" 2>/dev/null || echo FAILED)" != ok ]; then
        failed+=("$target")
        tail -n 80 "$scratch/$target.log" 2>/dev/null || true
    fi
    cat "$scratch/$target.summary" 2>/dev/null || echo "fuzz $target: FAILED (no summary)"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, ${jobs} at a time, no crash"
