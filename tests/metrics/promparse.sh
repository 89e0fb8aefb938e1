#!/usr/bin/env bash
# Parses a Prometheus text exposition with the official Python client's parser
# (prometheus_client.parser.text_string_to_metric_families), for tests/tests/metrics.rs.
#
#   promparse.sh install   create the venv (~/.cache/onair/metrics-venv) when missing
#   promparse.sh parse     read the exposition on stdin; print it as one JSON array of families
#                          ({"name", "type", "help", "samples": [{"name", "labels", "value"}]});
#                          a line the parser refuses fails with its error (exit 1)
#
# Environment: ONAIR_METRICS_VENV (venv path), ONAIR_PROMETHEUS_CLIENT_VERSION (pip requirement,
# default "prometheus-client"), PYTHON (default python3).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${ONAIR_METRICS_VENV:-$HOME/.cache/onair/metrics-venv}"
REQ="${ONAIR_PROMETHEUS_CLIENT_VERSION:-prometheus-client}"
PY="${PYTHON:-python3}"

die() { echo "promparse.sh: $*" >&2; exit 1; }

# venv_install
. "$HERE/../venv.sh"

# Tests run in parallel: one installs, the others wait for it.
install() {
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  venv_install "$VENV" "$REQ" prometheus_client
  exec 9>&-
}

case "${1:-}" in
  install) install ;;
  parse)
    install
    exec "$VENV/bin/python" -c '
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type, "help": f.documentation,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
'
    ;;
  *) die "usage: promparse.sh install|parse" ;;
esac
