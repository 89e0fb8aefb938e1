#!/usr/bin/env bash
# Independent WHEP players for OnAir's interop tests (tests/tests/whep_interop.rs).
#
#   whep.sh install                  create the aiortc venv (~/.cache/onair/whep-venv) when missing
#   whep.sh play URL [SECONDS]       play URL (POST /live/<stream>/whep) with aiortc for SECONDS
#                                    (default 5); prints one JSON line (see aiortc_play.py)
#   whep.sh gst-install              install GStreamer's webrtcbin and its Python bindings (apt)
#                                    when missing
#   whep.sh gst-play URL [SECONDS]   the same with GStreamer webrtcbin (gst_play.py)
#
# Environment: ONAIR_WHEP_VENV (venv path), ONAIR_AIORTC_VERSION (pip requirement, default
# "aiortc"), PYTHON (default python3).
set -euo pipefail
# No __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${ONAIR_WHEP_VENV:-$HOME/.cache/onair/whep-venv}"
REQ="${ONAIR_AIORTC_VERSION:-aiortc}"
PY="${PYTHON:-python3}"
# GStreamer's Python bindings (python3-gi, python3-gst-1.0) exist for Debian's own interpreter only.
SYSPY=/usr/bin/python3
GST_PACKAGES=(gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-plugins-good gstreamer1.0-libav
  python3-gst-1.0 gir1.2-gst-plugins-bad-1.0)

die() { echo "whep.sh: $*" >&2; exit 1; }

# venv_install
. "$HERE/../venv.sh"

install() {
  venv_install "$VENV" "$REQ" "aiortc, av"
}

gst_ready() {
  "$SYSPY" - <<'PY' >/dev/null 2>&1
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst
Gst.init(None)
for e in ("webrtcbin", "nicesrc", "rtph264depay", "avdec_h264", "opusdec"):
    assert Gst.ElementFactory.find(e), e
PY
}

gst_install() {
  gst_ready && return 0
  local missing=() p
  for p in "${GST_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "whep.sh: installing ${missing[*]}" >&2
    local sudo_=()
    [ "$(id -u)" = 0 ] || sudo_=(sudo)
    local log
    log="$(mktemp -t onair-whep-apt.XXXXXX)"
    if ! { "${sudo_[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$log"
  fi
  gst_ready || die "GStreamer webrtcbin is not usable from $SYSPY after installing ${GST_PACKAGES[*]}"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install) install ;;
  play) install; exec "$VENV/bin/python" "$HERE/aiortc_play.py" "$@" ;;
  gst-install) gst_install ;;
  gst-play) gst_install; exec "$SYSPY" "$HERE/gst_play.py" "$@" ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
