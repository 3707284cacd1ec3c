#!/usr/bin/env bash
# Builds and runs natter's fuzz targets with cargo-fuzz (libFuzzer), each
# for SECONDS (default 60), then prints one summary line per target.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz from crates.io when `cargo fuzz` is missing. Bounded: each
# target stops after SECONDS of fuzzing (libFuzzer's -max_total_time), in
# fork mode so that a crash is recorded and fuzzing goes on.
#
# connection_frames tolerates known findings named in NATTER_FUZZ_ALLOW
# (comma-separated: lost-close-reply; see the target's source);
# unset, every invariant is strict. NATTER_FUZZ_DEBUG=1 makes it print each
# input, its wire bytes and the model's verdict (for reproducing a crash).
#
# Layout (under fuzz/): seeds/<target>/ committed seed inputs (read only),
# regressions/<target>/ committed reproducers of known findings (not fuzzed),
# corpus/<target>/ the growing corpus, artifacts/<target>/ crashing inputs,
# logs/<target>.log libFuzzer's output. corpus/, artifacts/ and logs/ are
# not committed. Reproduce a crash (same build flags as below) with
#   cargo +nightly fuzz run -a -s address --target-dir fuzz/target/address \
#       decode_request fuzz/artifacts/decode_request/crash-...
#   cargo +nightly fuzz run -a -s none --target-dir fuzz/target/none \
#       connection_frames fuzz/artifacts/connection_frames/crash-...
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(decode_request connection_frames)

case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
cd "$ROOT"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "run.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz missing; installing it from crates.io" >&2
    cargo install --locked cargo-fuzz
fi

# Per-target build flags. -a: debug assertions (and so overflow checks) on
# in all the fuzzed code. decode_request runs under AddressSanitizer;
# connection_frames without a sanitizer: it is safe Rust over an async
# runtime, and ASan made it ~7x slower (fewer states explored). Each
# sanitizer gets its own target dir so the two builds do not evict
# each other.
build_flags() {
    case "$1" in
        connection_frames) echo "-a -s none --target-dir $FUZZ_DIR/target/none" ;;
        *) echo "-a -s address --target-dir $FUZZ_DIR/target/address" ;;
    esac
}
# Per-target libFuzzer options.
run_flags() {
    case "$1" in
        # Structured input: let libFuzzer use long inputs (many frames) at once.
        connection_frames) echo "-len_control=0 -max_len=4096" ;;
        decode_request) echo "-dict=$FUZZ_DIR/dicts/decode_request.dict" ;;
    esac
}
echo "run.sh: building ${TARGETS[*]} ($(cargo +nightly fuzz --version))"
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046
    cargo +nightly fuzz build $(build_flags "$t") "$t"
done

mkdir -p "$FUZZ_DIR/logs"
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    artifacts="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus")
    [ -d "$FUZZ_DIR/seeds/$t" ] && dirs+=("$FUZZ_DIR/seeds/$t")
    log="$FUZZ_DIR/logs/$t.log"
    before=$(find "$artifacts" -type f | wc -l)
    start=$(date +%s)
    status=0
    # -fork=1 -ignore_crashes=1: fuzz in a child process and go on after a
    # crash (its input is saved in artifacts/), so a known bug neither ends
    # the run early nor stops it at the corpus replay. -timeout: an input
    # that takes over 20 s counts as a hang.
    # shellcheck disable=SC2046
    cargo +nightly fuzz run $(build_flags "$t") "$t" "${dirs[@]}" -- \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -timeout=20 \
        -print_final_stats=1 $(run_flags "$t") \
        >"$log" 2>&1 || status=$?
    took=$(($(date +%s) - start))
    # Executions: the last fork-mode status line ("#N: cov: ..."), or the
    # final stats of a non-fork run.
    runs=$(grep -aoE '^#[0-9]+: cov:' "$log" | tail -1 | tr -dc 0-9 || true)
    [ -z "$runs" ] && runs=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}' || true)
    crashes=$(find "$artifacts" -type f | wc -l)
    line="$t: ${took}s, ${runs:-?} runs, $crashes crash file(s) in fuzz/artifacts/$t/ ($((crashes - before)) new)"
    # libFuzzer exits 77 (-error_exitcode) when it saved crashes; anything
    # else non-zero means the run itself failed.
    if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then
        line="$line, EXIT STATUS $status (see fuzz/logs/$t.log)"
    fi
    summary+=("$line")
done

echo
echo "== fuzz summary (${SECONDS_PER_TARGET}s per target) =="
for line in "${summary[@]}"; do echo "$line"; done
