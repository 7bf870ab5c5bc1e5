#!/usr/bin/env bash
# The project's test command (README): sudo ./scripts/test.sh [extra `cargo test` arguments]
# Installs prerequisites (scripts/setup.sh), then runs rustfmt, clippy with warnings denied, builds
# the Debian package (cargo deb), and runs every test target and the doc tests. Integration tests
# build their worlds in private network namespaces and need root; a missing prerequisite is an
# error, never a skipped test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the integration tests need root: sudo ./scripts/test.sh" >&2
    exit 1
fi

./scripts/setup.sh

# Find cargo as setup.sh does; under sudo, use the invoking user's rustup toolchain if that is
# the one there is.
if ! command -v cargo >/dev/null 2>&1; then
    for home in "${HOME:-/root}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            export PATH="$home/.cargo/bin:$PATH"
            if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$home/.rustup" ]; then
                export RUSTUP_HOME="$home/.rustup"
            fi
            if [ -z "${CARGO_HOME:-}" ]; then
                export CARGO_HOME="$home/.cargo"
            fi
            break
        fi
    done
fi
for sub in fmt clippy; do
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        echo "test.sh: \`cargo $sub\` is missing (rustup component add rustfmt clippy, or Debian's rustfmt-web / rust-web-clippy)" >&2
        exit 1
    fi
done

step() { printf '\n==> %s\n' "$*"; }

step cargo fmt --check
cargo fmt --check

step cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets -- -D warnings

# The fuzz target is its own workspace (cargo-fuzz runs it with nightly and libFuzzer); build it
# here so it cannot rot unseen. tests/fuzz_corpus.rs runs its logic on the corpus.
step cargo build --manifest-path fuzz/Cargo.toml
cargo build --manifest-path fuzz/Cargo.toml

# The Debian package (a release build), built once here for tests/packaging.rs, which checks it,
# installs it into a throw-away root and builds the container image from its binary.
step cargo deb --locked
LANYARD_DEB=$(cargo deb --locked --quiet | tail -n 1)
export LANYARD_DEB

log=$(mktemp /tmp/lanyard-test.sh.XXXXXX.log)
trap 'rm -f "$log"' EXIT

step cargo test --all-targets "$@"
status=0
cargo test --all-targets "$@" 2>&1 | tee "$log" || status=$?

# Doc tests exist only for a library target.
if [ "$status" -eq 0 ] && [ -f src/lib.rs ]; then
    step cargo test --doc
    cargo test --doc 2>&1 | tee -a "$log" || status=$?
fi

# Summary: every "test result:" line of cargo test, then the totals.
echo
echo "==> summary"
grep -E '^test result:' "$log" || echo "(no test result lines: build or run failed)"
read -r passed failed ignored < <(awk '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) p += $i
            if ($(i + 1) ~ /^failed;?$/) f += $i
            if ($(i + 1) ~ /^ignored;?$/) s += $i
        }
    }
    END { printf "%d %d %d\n", p, f, s }' "$log")
echo "total: ${passed} passed, ${failed} failed, ${ignored} ignored"

if [ "$status" -ne 0 ]; then
    echo "test.sh: cargo test failed (exit $status)" >&2
    exit "$status"
fi
if [ "$passed" -eq 0 ]; then
    echo "test.sh: no test ran" >&2
    exit 1
fi
# A test that does not run proves nothing: no test may be #[ignore]d.
if [ "$ignored" -ne 0 ]; then
    echo "test.sh: ${ignored} test(s) ignored; every test must run:" >&2
    grep -E '^test .* \.\.\. ignored' "$log" >&2 || true
    exit 1
fi
echo "test.sh: all checks passed"
