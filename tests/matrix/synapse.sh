#!/usr/bin/env bash
# A throwaway Synapse homeserver for OnAir's Matrix tests.
#
#   synapse.sh install                 create the venv (~/.cache/onair/synapse-venv) when missing
#   synapse.sh start DIR [OWNER_PID]   write a config into DIR, start Synapse on 127.0.0.1 (SQLite, a
#                                      free port), wait until it answers; prints BASE_URL=… and
#                                      SERVER_NAME=…. With OWNER_PID, Synapse is stopped as soon as
#                                      that process is gone (test binaries have no teardown hook).
#   synapse.sh register DIR USER PASSWORD [admin]
#                                      register a user through the shared-secret admin API
#   synapse.sh stop DIR                stop the Synapse started in DIR
#   synapse.sh resume DIR              start it again (same config, port and database)
#   synapse.sh run                     start in a temp dir, register alice/bob (password "secret"),
#                                      keep running until Ctrl-C, then stop and clean up
#
# Environment: ONAIR_SYNAPSE_VENV (venv path), ONAIR_SYNAPSE_VERSION (pip requirement, default
# "matrix-synapse"), PYTHON (default python3), ONAIR_SYNAPSE_NO_GUESTS=1 (start: a homeserver that
# refuses guest accounts, `allow_guest_access: false`).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${ONAIR_SYNAPSE_VENV:-$HOME/.cache/onair/synapse-venv}"
REQ="${ONAIR_SYNAPSE_VERSION:-matrix-synapse}"
PY="${PYTHON:-python3}"

die() { echo "synapse.sh: $*" >&2; exit 1; }

# venv_install
. "$HERE/../venv.sh"

install() {
  venv_install "$VENV" "$REQ" synapse ", ~40 s"
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# A fresh random secret.
token() {
  "$PY" -c 'import secrets; print(secrets.token_hex(24))'
}

write_config() {
  local dir="$1" port="$2" secret
  # No rate limit: the tests register, log in, join and send in bursts.
  local unlimited="{per_second: 1000, burst_count: 1000}"
  secret="$(token)"
  cat >"$dir/homeserver.yaml" <<EOF
server_name: "localhost"
public_baseurl: "http://127.0.0.1:$port/"
pid_file: "$dir/homeserver.pid"
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$dir/homeserver.db"
media_store_path: "$dir/media"
signing_key_path: "$dir/signing.key"
log_config: "$dir/log.yaml"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
registration_shared_secret: "$secret"
macaroon_secret_key: "$(token)"
form_secret: "$(token)"
enable_registration: true
enable_registration_without_verification: true
allow_guest_access: $([ "${ONAIR_SYNAPSE_NO_GUESTS:-}" = 1 ] && echo false || echo true)
allow_public_rooms_without_auth: true
allow_public_rooms_over_federation: false
room_list_publication_rules:
  # The tests check that a room the directory refuses still works, unlisted.
  - alias: "#onair_unlisted*"
    action: deny
  - action: allow
alias_creation_rules:
  - action: allow
presence:
  enabled: false
url_preview_enabled: false
enable_metrics: false
federation_domain_whitelist: []
rc_message: $unlimited
rc_registration: $unlimited
rc_registration_token_validity: $unlimited
rc_login: {address: $unlimited, account: $unlimited, failed_attempts: $unlimited}
rc_admin_redaction: $unlimited
rc_joins: {local: $unlimited, remote: $unlimited}
rc_joins_per_room: $unlimited
rc_invites: {per_room: $unlimited, per_user: $unlimited, per_issuer: $unlimited}
rc_3pid_validation: $unlimited
rc_room_creation: $unlimited
EOF
  cat >"$dir/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$dir/homeserver.log"
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
  echo "$secret" >"$dir/shared_secret"
  echo "$port" >"$dir/port"
}

start() {
  local dir="${1:?usage: synapse.sh start DIR [OWNER_PID]}" owner="${2:-}"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  write_config "$dir" "$(free_port)"
  "$VENV/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" --generate-keys \
    >"$dir/generate.log" 2>&1 || { cat "$dir/generate.log" >&2; die "generating keys failed"; }
  if [ -n "$owner" ]; then
    # The watchdog: stop Synapse and remove DIR once the owner (a test binary) has exited, however
    # it exited. Its own session, so the owner's process group ending does not end it first.
    setsid "$0" _watch "$owner" "$dir" >/dev/null 2>&1 </dev/null &
  fi
  resume "$dir"
}

# Start Synapse again from the config already in DIR (same port, same database).
resume() {
  local dir="${1:?usage: synapse.sh resume DIR}"
  dir="$(cd "$dir" && pwd)"
  local port pid i
  port="$(cat "$dir/port")"
  # setsid: Synapse leads its own process group, so `stop` ends it and nothing else.
  setsid "$VENV/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" \
    >>"$dir/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/synapse.pid"
  local url="http://127.0.0.1:$port"
  for i in $(seq 1 300); do
    if curl -fsS "$url/_matrix/client/versions" >/dev/null 2>&1; then
      echo "BASE_URL=$url"
      echo "SERVER_NAME=localhost"
      echo "DIR=$dir"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$dir/stdout.log" "$dir/homeserver.log" >&2 || true; die "Synapse exited"; }
    sleep 0.1
  done
  stop "$dir"
  die "Synapse did not answer on $url within 30 s"
}

watch_owner() {
  local owner="$1" dir="$2"
  while kill -0 "$owner" 2>/dev/null; do sleep 0.5; done
  stop "$dir"
  rm -rf "$dir"
}

register() {
  local dir="${1:?usage: synapse.sh register DIR USER PASSWORD [admin]}" user="${2:?}" pass="${3:?}" admin="${4:-}"
  local port secret
  port="$(cat "$dir/port")"
  secret="$(cat "$dir/shared_secret")"
  "$VENV/bin/python" - "$port" "$secret" "$user" "$pass" "$admin" <<'EOF'
import hashlib, hmac, json, sys, urllib.request, urllib.error
port, secret, user, password, admin = sys.argv[1:6]
base = f"http://127.0.0.1:{port}/_synapse/admin/v1/register"
nonce = json.load(urllib.request.urlopen(base))["nonce"]
is_admin = admin == "admin"
msg = "\x00".join([nonce, user, password, "admin" if is_admin else "notadmin"])
mac = hmac.new(secret.encode(), msg.encode(), hashlib.sha1)
body = json.dumps({"nonce": nonce, "username": user, "password": password, "admin": is_admin,
                   "mac": mac.hexdigest()}).encode()
req = urllib.request.Request(base, data=body, headers={"Content-Type": "application/json"})
try:
    out = json.load(urllib.request.urlopen(req))
except urllib.error.HTTPError as e:
    sys.exit(f"synapse.sh: registering {user} failed: {e.code} {e.read().decode()}")
print(f"USER_ID={out['user_id']}")
EOF
}

stop() {
  local dir="${1:?usage: synapse.sh stop DIR}" pid i
  [ -f "$dir/synapse.pid" ] || return 0
  pid="$(cat "$dir/synapse.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/synapse.pid"
}

run() {
  local dir
  dir="$(mktemp -d -t onair-synapse.XXXXXX)"
  trap 'stop "$dir"; rm -rf "$dir"' EXIT
  trap 'exit 130' INT TERM
  start "$dir"
  register "$dir" alice secret
  register "$dir" bob secret
  echo "Synapse is running in $dir; users alice and bob (password \"secret\"). Ctrl-C stops it."
  while kill -0 "$(cat "$dir/synapse.pid")" 2>/dev/null; do sleep 1; done
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  register) register "$@" ;;
  resume) resume "$@" ;;
  stop) stop "$@" ;;
  _watch) watch_owner "$@" ;;
  run) run ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
