#!/usr/bin/env bash
# The whole test suite, once per async runtime that natter-runtime can be
# built on: async-std (the default) and smol. This is the README's test
# command (`bash tests/run.sh`); CI runs it too (.ci/run).
#
#   bash tests/run.sh [ARGS...]
#
# ARGS go to both `cargo test` runs (e.g. `-- --nocapture`). Both runs
# happen even if the first fails, so one report covers both runtimes; the
# exit status is non-zero if either failed.
#
# One runtime at a time by hand:
#   cargo test --workspace                                          # async-std
#   cargo test --workspace --no-default-features --features smol   # smol
# (`--features smol` on the workspace enables the feature in every member
# that has it; natter-protocol has no runtime and needs none.)
set -uo pipefail
cd "$(dirname "$0")/.."

# No incremental state: it is ~1.3 GB per runtime that a from-scratch run
# never reuses (CI once ran out of disk). Export CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | awk 'NR==2 {print "== disk free here: " $4}'

failed=()

echo "== cargo test --workspace  (runtime: async-std, the default)"
cargo test --workspace "$@" || failed+=("async-std")

echo "== cargo test --workspace --no-default-features --features smol  (runtime: smol)"
cargo test --workspace --no-default-features --features smol "$@" || failed+=("smol")

echo "== browser tests: the page at GET / in headless Chromium (tests/browser/run.sh)"
bash tests/browser/run.sh || failed+=("browser")

if ((${#failed[@]})); then
    echo "== tests FAILED under: ${failed[*]}" >&2
    exit 1
fi
echo "== tests passed under async-std and smol"
