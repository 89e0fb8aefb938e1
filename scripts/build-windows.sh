#!/usr/bin/env bash
# Cross-builds OnAir for Windows (x86_64-pc-windows-gnu) on Debian/Ubuntu: the headless
# `onair.exe`, the desktop app `onair-desktop.exe` and the NSIS installer
# `OnAir-<version>-setup.exe`. Installs what it needs (mingw-w64, NSIS, nasm, the Rust target).
#
#   scripts/build-windows.sh          release build (what you ship)
#   scripts/build-windows.sh --dev    the test profile, quicker (what scripts/test.sh builds)
#
# Prints the installer's path last. Outputs go to $CARGO_TARGET_DIR/x86_64-pc-windows-gnu/<profile>/dist/.
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

built="$CARGO_TARGET_DIR/$target/$([ "$profile" = dev ] && echo debug || echo release)"
# What ships, without debug info, in dist/ beside cargo's output: the two programs and the WebView2
# loader the desktop app links; the installer is made from there.
dist="$built/dist"
mkdir -p "$dist"
for f in onair.exe onair-desktop.exe; do
  [ "$built/$f" -nt "$dist/$f" ] && x86_64-w64-mingw32-strip -o "$dist/$f" "$built/$f"
done
cp -p "$built/WebView2Loader.dll" "$dist/"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
out="$dist/OnAir-$version-setup.exe"
# The test build trades size for time: zlib packs it in seconds, LZMA (the default) in minutes.
compressor=()
[ "$profile" = dev ] && compressor=(-DCOMPRESSOR=zlib)
stale=0
for input in "$dist"/onair.exe "$dist"/onair-desktop.exe "$dist"/WebView2Loader.dll installers/windows/onair.nsi icons/icon.ico; do
  [ "$input" -nt "$out" ] && stale=1
done
if [ $stale = 1 ]; then
  makensis -V2 -DVERSION="$version" -DBINDIR="$dist" -DOUTFILE="$out" "${compressor[@]}" installers/windows/onair.nsi
fi
echo "$out"
