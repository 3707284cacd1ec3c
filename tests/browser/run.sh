#!/usr/bin/env bash
# Real-browser tests of natter's page (server/src/web/index.html, served by
# natter-server at GET /): headless Chromium, driven by playwright-core from
# Node's built-in test runner, against real natter-server processes and the
# CLI client. Called once by tests/run.sh; can be run alone:
#
#   bash tests/browser/run.sh
#
# Needs Debian's chromium (/usr/bin/chromium; installed here with apt-get
# when running as root, else the one line below says what to install),
# Node.js 20+ and npm (playwright-core, pinned in package.json and
# package-lock.json, is installed with `npm ci`; it never downloads a
# browser). Screenshots go to $CARGO_TARGET_DIR/browser/ (target/browser/
# by default) for a person to look at.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/tests/browser
chromium=${NATTER_CHROMIUM:-/usr/bin/chromium}

fail() { echo "tests/browser: $*" >&2; exit 1; }

# --- Chromium: Debian's package, never a browser download. --------------
if [[ ! -x $chromium ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing Debian's chromium (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt_log=$(mktemp)
        # Package lists missing or too old to know chromium: refresh them once.
        if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt-get update -qq >"$apt_log" 2>&1 || { cat "$apt_log" >&2; fail "apt-get update failed"; }
        fi
        # Quiet unless it fails. No recommends (printing, notifications…);
        # DejaVu so that text renders in screenshots.
        apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >"$apt_log" 2>&1 \
            || { cat "$apt_log" >&2; fail "apt-get install chromium failed"; }
        rm -f "$apt_log"
        [[ -x $chromium ]] || fail "apt-get installed chromium but $chromium is missing"
    else
        fail "needs Debian's chromium at $chromium: install it with 'sudo apt-get install chromium'"
    fi
fi

# --- Node.js and playwright-core. ------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null \
    || fail "needs Node.js 20 or newer with npm: install them (Debian: 'apt-get install nodejs npm')"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || fail "needs Node.js 20 or newer (this is $(node --version))"
# `npm ci` only when the lock file changed since the last install here.
stamp=$here/node_modules/.natter-installed-lock
if ! cmp -s "$here/package-lock.json" "$stamp" 2>/dev/null; then
    echo "== npm ci (tests/browser)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
    cp "$here/package-lock.json" "$stamp"
fi

# --- The binaries under test. --------------------------------------------
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
echo "== cargo build -p natter-server -p natter (for the browser tests)"
cargo build --quiet -p natter-server -p natter || fail "cargo build failed"

export NATTER_SERVER_BIN=$target/debug/natter-server
export NATTER_CLIENT_BIN=$target/debug/natter
export NATTER_BROWSER_OUT=$target/browser
export NATTER_CHROMIUM=$chromium
mkdir -p "$NATTER_BROWSER_OUT"

# --- The tests: one file per scenario, one at a time (2 cores; each has
# its own server and browser), each test with its own timeout. -------------
# The files are named (not the folder) so that Node 22's glob reading of
# the arguments runs the same set as Node 20's folder search.
echo "== node --test tests/browser/  (headless $("$chromium" --version 2>/dev/null || echo chromium))"
start=$SECONDS
status=0
# --test-force-exit: a test that timed out leaves its browser and sockets
# open, and the file's process would then never end (lib.mjs kills the
# servers it started when the process exits). `timeout` bounds the whole run.
force_exit=()
# (grep reads all of it: with -q, node could die of SIGPIPE and pipefail say no.)
if node --help | grep -- '--test-force-exit' >/dev/null; then force_exit=(--test-force-exit); fi
timeout --kill-after=10 300 node --test --test-concurrency=1 "${force_exit[@]}" "$here"/*.test.mjs || status=$?
echo "== browser tests took $((SECONDS - start)) s; screenshots in $NATTER_BROWSER_OUT/"
exit $status
