#!/usr/bin/env bash
# The one command that runs every check: formatting, lints, unit tests and the
# end-to-end tests with real peers (pyzmq/libzmq publishers, Python websockets
# clients). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (links in doc comments must resolve: a moved module breaks them)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace
echo "== build binaries for the end-to-end tests"
cargo build --workspace --bins
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
