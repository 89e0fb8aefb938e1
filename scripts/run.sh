#!/usr/bin/env bash
# Builds and runs OnAir with embedded defaults, installing build dependencies when missing:
#   * in a graphical session ($DISPLAY or $WAYLAND_DISPLAY): the desktop tray app (onair-desktop);
#   * otherwise, or with --headless: the engine alone (`onair serve`; extra arguments go to it,
#     e.g. --http 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onair/target}"

if [ "${1:-}" = "--headless" ]; then
  shift
  desktop=0
elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  desktop=1
else
  desktop=0
fi
if [ $desktop = 1 ]; then
  cargo build --release --locked -p onair-desktop
  set -- "$CARGO_TARGET_DIR/release/onair-desktop" "$@"
else
  cargo build --release --locked -p onair
  set -- "$CARGO_TARGET_DIR/release/onair" serve "$@"
fi

# Secrets live in the OS keyring. A desktop session has one; a bare server (SSH, no desktop)
# usually has none: unless ONAIR_SIGNING_KEY is set, start a private Secret Service
# (gnome-keyring, its keyring file kept in ~/.local/share/keyrings) for this run.
if [ -z "${ONAIR_SIGNING_KEY:-}" ] && ! busctl --user list 2>/dev/null | grep -q org.freedesktop.secrets; then
  if ! command -v gnome-keyring-daemon >/dev/null || ! command -v dbus-run-session >/dev/null; then
    echo "run: no Secret Service found; installing gnome-keyring to keep the signing key"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq gnome-keyring dbus-x11 >/dev/null; else sudo apt-get install -y -qq gnome-keyring dbus-x11 >/dev/null; fi
  fi
  exec dbus-run-session -- sh -c 'eval "$(printf onair | gnome-keyring-daemon --unlock --components=secrets)"; eval "$(gnome-keyring-daemon --start --components=secrets)"; export GNOME_KEYRING_CONTROL; exec "$@"' sh "$@"
fi
exec "$@"
