#!/usr/bin/env bash
# Runs every OnAir test: unit (Rust, and the web UI's with vitest), golden and end-to-end (real
# ffmpeg, ffprobe, headless Chromium).
# Installs what the tests need when it is missing. Cargo's target dir is cached outside the
# checkout (~/.cache/onair/target) so a warm machine rebuilds little.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onair/target}"
export CARGO_TERM_COLOR=never
# The web UI's unit tests (vitest) first, so that cargo's summary stays the last lines.
(cd ui && NO_COLOR=1 npm test --silent)
# The Windows build (cross-built with mingw, installer with NSIS): built on every run so that it
# cannot silently break; tests/tests/windows.rs runs it under Wine.
scripts/build-windows.sh --dev
# Two e2e tests at a time: each runs real encoders, and the machine may have only 2 cores.
cargo test --workspace --locked -- --test-threads=2
