#!/usr/bin/env bash
# Builds the desktop app's Linux packages (.deb and .rpm) with the Tauri bundler, offline, and
# checks their contents (binary, desktop entry, icons). Prints the path of the .deb last.
#
#   scripts/build-deb.sh                 debug build (fast; what the tests check)
#   scripts/build-deb.sh --release       release build (what you ship)
#   scripts/build-deb.sh --bundle-only   package an already built <target>/debug/onair-desktop
#
# Needs scripts/setup.sh's packages and Node.js (the Tauri CLI comes from src-tauri/package.json).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=debug
bundles=deb,rpm
build=1
for arg in "$@"; do
  case "$arg" in
    --release) mode=release ;;
    --bundle-only) build=0 ;;
    *) echo "build-deb: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ ! -f src-tauri/node_modules/.package-lock.json ] || [ src-tauri/package-lock.json -nt src-tauri/node_modules/.package-lock.json ]; then
  (cd src-tauri && npm ci --no-audit --no-fund --loglevel=error)
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ "$mode" = release ]; then
  (cd src-tauri && npx tauri build --bundles "$bundles" --ci)
else
  # Debug: a debug binary carries ~600 MB of debug info. Package a stripped copy from a staging
  # target dir instead (the bundler takes the binary from <target>/debug/).
  if [ $build = 1 ]; then
    cargo build -p onair-desktop
  fi
  staging="$target_dir/deb-staging"
  rm -rf "$staging"
  mkdir -p "$staging/debug"
  strip --strip-debug -o "$staging/debug/onair-desktop" "$target_dir/debug/onair-desktop"
  (cd src-tauri && CARGO_TARGET_DIR="$staging" npx tauri bundle --debug --bundles "$bundles" --ci)
  target_dir=$staging
fi
cd "$root"

version=$(sed -n 's/^ *"version": *"\(.*\)",$/\1/p' src-tauri/tauri.conf.json | head -1)
deb=$(ls -t "$target_dir/$mode/bundle/deb/"*"_${version}_"*.deb | head -1)
contents=$(dpkg-deb -c "$deb")
fail=0
check() { # check <what> <regex>
  if ! grep -Eq "$2" <<<"$contents"; then
    echo "build-deb: $deb lacks $1 ($2)" >&2
    fail=1
  fi
}
check "the binary" ' (\./)?usr/bin/onair-desktop$'
check "the desktop entry" ' (\./)?usr/share/applications/onair\.desktop$'
for size in 32x32 64x64 128x128 256x256@2; do
  check "the ${size} icon" " (\./)?usr/share/icons/hicolor/${size}/apps/onair-desktop\.png$"
done
entry=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards '*usr/share/applications/onair.desktop')
grep -q '^Exec=onair-desktop$' <<<"$entry" || { echo "build-deb: desktop entry without Exec=onair-desktop:" >&2; echo "$entry" >&2; fail=1; }
grep -q '^Icon=onair-desktop$' <<<"$entry" || { echo "build-deb: desktop entry without Icon=onair-desktop" >&2; fail=1; }
depends=$(dpkg-deb -f "$deb" Depends)
grep -q 'libwebkit2gtk-4.1-0' <<<"$depends" || { echo "build-deb: Depends lacks WebKitGTK: $depends" >&2; fail=1; }
rpm=$(ls -t "$target_dir/$mode/bundle/rpm/"*"-${version}-"*.rpm | head -1)
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/bin/onair-desktop /usr/share/applications/onair.desktop /usr/share/icons/hicolor/128x128/apps/onair-desktop.png; do
  grep -qx "$f" <<<"$rpm_files" || { echo "build-deb: $rpm lacks $f" >&2; fail=1; }
done
# The bundler's staging copies of the package trees are as big as the binary: drop them.
rm -rf "$target_dir/$mode/bundle/deb/onair_${version}_"*/ "$target_dir/$mode/bundle/rpm/onair-${version}-"*/
[ $fail = 0 ] || exit 1
echo "build-deb: $(wc -l <<<"$contents") entries, binary + desktop entry + icons present; Depends: $depends"
echo "build-deb: $rpm has the binary, the desktop entry and the icons"
echo "$deb"
