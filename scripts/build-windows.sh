#!/usr/bin/env bash
# Cross-builds OnAir for Windows (x86_64-pc-windows-gnu) on Debian/Ubuntu: the headless
# `onair.exe`, the desktop app `onair-desktop.exe` and the NSIS installer
# `OnAir-<version>-setup.exe`. Installs what it needs (mingw-w64, NSIS, nasm, the Rust target).
#
#   scripts/build-windows.sh          release build (what you ship)
#   scripts/build-windows.sh --dev    the test profile, quicker (what scripts/test.sh builds)
#
# Prints the installer's path last. Outputs go to $CARGO_TARGET_DIR/x86_64-pc-windows-gnu/<profile>/.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
  "") ;;
  --dev) profile=dev ;;
  *) echo "usage: scripts/build-windows.sh [--dev]" >&2; exit 2 ;;
esac

scripts/setup.sh --windows

target=x86_64-pc-windows-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onair/target}"
# mingw-w64 compiles the C parts (libopus, aws-lc) and links the .exe files: .cargo/config.toml.

cargo build --locked --profile "$profile" --target "$target" -p onair -p onair-desktop

dir="$CARGO_TARGET_DIR/$target/$([ "$profile" = dev ] && echo debug || echo release)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
out="$dir/OnAir-$version-setup.exe"
makensis -V2 -DVERSION="$version" -DBINDIR="$dir" -DOUTFILE="$out" installers/windows/onair.nsi
echo "$out"
