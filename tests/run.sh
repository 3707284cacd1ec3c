#!/usr/bin/env bash
# The whole test suite, once per async runtime that natter-runtime can be
# built on: async-std (the default) and smol. This is the README's test
# command (`bash tests/run.sh`); CI runs it too (.ci/run).
#
#   bash tests/run.sh [ARGS...]
#
# Needs Debian's redis-server for the multi-node tests (installed here with
# apt-get when running as root; see below).
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

fail() { echo "tests/run.sh: $*" >&2; exit 1; }

# --- Redis: the multi-node tests (server/tests/cluster*.rs) start
# redis-server themselves, one of their own per test on a port of their
# own; they never use a system Redis. Debian's package, installed here with
# apt-get when running as root (if its install starts a system service,
# that one is simply not used), else the one line below says what to
# install. A missing redis-server would fail those tests with that line.
if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing Debian's redis-server (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt_log=$(mktemp)
        # Package lists missing or too old to know redis-server: refresh them once.
        if ! apt-cache policy redis-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt-get update -qq >"$apt_log" 2>&1 || { cat "$apt_log" >&2; fail "apt-get update failed"; }
        fi
        # Quiet unless it fails.
        apt-get install -y -qq --no-install-recommends redis-server >"$apt_log" 2>&1 \
            || { cat "$apt_log" >&2; fail "apt-get install redis-server failed"; }
        rm -f "$apt_log"
        command -v redis-server >/dev/null || fail "apt-get installed redis-server but it is not on PATH"
    else
        fail "the cluster tests need Debian's redis-server: install it with 'sudo apt-get install redis-server'"
    fi
fi
echo "== $(redis-server --version | cut -d' ' -f1-3) (the cluster tests start their own)"

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
