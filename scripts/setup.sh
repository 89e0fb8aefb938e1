#!/usr/bin/env bash
# Installs what OnAir needs to build (and, with --test, to run its tests) on Debian/Ubuntu,
# skipping whatever is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# --test: also what the tests need (which includes the Windows cross-build and Wine);
# --windows: what scripts/build-windows.sh needs.
want_test=0
want_windows=0
case "${1:-}" in
  --test) want_test=1; want_windows=1 ;;
  --windows) want_windows=1 ;;
esac

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
need() { # need <command> <package>
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need cc build-essential
need cmake cmake
need pkg-config pkg-config
need node nodejs
need npm npm
# The desktop app (Tauri): WebKitGTK, the tray (AppIndicator), SVG icons, libsoup. No command to
# look for: ask dpkg.
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
for p in libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libsoup-3.0-dev libssl-dev; do need_pkg "$p"; done
if [ $want_test = 1 ]; then
  need ffmpeg ffmpeg
  need ffprobe ffmpeg
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  need dbus-run-session dbus
  need gnome-keyring-daemon gnome-keyring
  need secret-tool libsecret-tools
  # The desktop app's tests: a virtual display, a notification daemon, screenshots.
  need Xvfb xvfb
  need xvfb-run xvfb
  need xauth xauth
  need dunst dunst
  need rpm rpm
  need import imagemagick
  need python3 python3
  # Synapse (the Matrix homeserver of the chat tests) and the Prometheus parser of the metrics
  # test (tests/metrics/promparse.sh) go into venvs: Debian splits venv out.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  # GStreamer webrtcbin, the second independent WHEP player of the interop tests (tests/whep/);
  # aiortc, the first, goes into a venv like Synapse.
  for p in gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-plugins-good gstreamer1.0-libav \
    python3-gst-1.0 gir1.2-gst-plugins-bad-1.0; do need_pkg "$p"; done
  # The browser engines besides Chromium (tests/tests/engines.rs): Firefox ESR, and WebKitGTK's
  # MiniBrowser driven by WebKitWebDriver (it plays LL-HLS through gstreamer1.0-libav, above).
  need firefox-esr firefox-esr
  need WebKitWebDriver webkit2gtk-driver
  # A real OBS for the one-click setup tests, headless under Xvfb.
  need obs obs-studio
  need xvfb-run xvfb
  need xauth xauth
  # Reach (tests/tests/reach.rs, acme.rs, turn): a router daemon in network namespaces the tests
  # create (UPnP-IGD and NAT-PMP/PCP) with its clients, Let's Encrypt's test CA, and coturn as
  # STUN and TURN server.
  need ip iproute2
  need nft nftables
  need miniupnpd miniupnpd-nftables
  need upnpc miniupnpc
  need natpmpc natpmpc
  need pebble pebble
  need pebble-challtestsrv pebble
  need turnserver coturn
  # Beyond the home uplink (issue 12): nginx-rtmp as a restream destination (behind nginx's
  # `stream` TLS for rtmps://), nginx `proxy_cache` and Varnish as the caches in front of LL-HLS.
  # The tests start their own instances on loopback ports; the packages' services stay stopped.
  need_pkg nginx
  need_pkg libnginx-mod-rtmp
  need_pkg libnginx-mod-stream
  need_pkg varnish
fi
if [ $want_windows = 1 ]; then
  # The Windows cross-build (scripts/build-windows.sh): mingw-w64 (C compiler, linker, windres),
  # nasm (aws-lc's assembly) and NSIS for the installer.
  need x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
  need x86_64-w64-mingw32-g++ g++-mingw-w64-x86-64
  need nasm nasm
  need makensis nsis
fi
if [ $want_test = 1 ]; then
  # The Windows build under test (tests/tests/windows.rs): Wine runs the .exe files, icoutils
  # reads their resources.
  [ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
  need wrestool icoutils
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is missing. Install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi

if [ $want_windows = 1 ] && ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
  rustup target add x86_64-pc-windows-gnu
fi

# The web UI (embedded into the binary at build time).
if [ ! -f ui/node_modules/.package-lock.json ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ $want_test = 1 ]; then
  if [ ! -f tests/browser/node_modules/.package-lock.json ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
