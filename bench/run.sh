#!/usr/bin/env bash
# OnAir benchmark: 1080p30 at 6 Mb/s through `onair serve` on loopback.
#
#   bench/run.sh [all|cpu|latency|load|fanout|abuse|edge]  (default: all; see bench/README.md)
#
#   cpu      engine CPU and RSS while packaging one stream (and four), no viewers; the anchor is
#            nginx-rtmp packaging the same stream as HLS
#   latency  LL-HLS glass-to-glass latency: wall clock burnt into the frames, read back in Chromium
#   load     how many LL-HLS players the engine keeps fed, vs nginx serving the same bytes from disk
#   fanout   CPU-seconds per GiB of 50 keep-alive clients fetching the newest segment, vs nginx
#   abuse    engine CPU/RSS under the attack of tests/tests/abuse.rs while two viewers watch, and
#            how long a new viewer waits for its first frame meanwhile
#   edge     origin CPU and bytes with 0, 40 and 200 LL-HLS players behind an nginx cache
#            (docs/edge/nginx.conf)
#   restream engine CPU with 0, 1, 2 and 4 restream destinations (nginx-rtmp on loopback); runs
#            itself in a private Secret Service (dbus-run-session + gnome-keyring): keys live there
#
# Environment (all optional):
#   ONAIR_BENCH_WORK      work dir (default /tmp/onair-bench): source clip, logs, results
#   ONAIR_BENCH_TARGET    cargo target dir (default ~/.cache/onair-bench-target)
#   BENCH_NO_BUILD=1      use the binaries already built there
#   BENCH_PORT_BASE       ports BASE (engine HTTP), BASE+1 (RTMP), BASE+2 (nginx), BASE+3 (engine
#                         WebRTC, UDP and TCP); default: the first
#                         free one of 39080, 39180, …
#   BENCH_PIN=1           pin the server (engine or nginx) to CPU 0 and everything else to CPU 1
#   BENCH_STEPS           player counts to ramp through (default 400,1000,2000,3000,4000,5000,6000)
#   BENCH_BISECT          refinement steps after the first failing count (default 2)
#   BENCH_WARMUP, BENCH_MEASURE   seconds per load step (default 3 and 6)
#   BENCH_ENGINE_POLL=0   skip the engine-with-polling-players run of `load`
#   BENCH_SAME_UA=1       all simulated players send one User-Agent (default: one each, as distinct viewers)
#   BENCH_LATENCY_SIZE    resolution of the live source for `latency` (default 1920x1080)
#   BENCH_LATENCY_WEBRTC=0  skip the extra WebRTC latency measurement
#   BENCH_CPU_SECONDS     CPU sampling window (default 30)
#   BENCH_WAIT_QUIET=S    before each part, wait up to S seconds for other processes to leave the CPU
#   BENCH_FANOUT_CLIENTS, BENCH_FANOUT_SECONDS, BENCH_FANOUT_ROUNDS   fanout: clients (50), seconds
#                         per turn (10), turns per server (3)
#   BENCH_EDGE_PLAYERS    edge: player counts behind the cache (default 0,40,200)
#   BENCH_EDGE_SECONDS    edge: seconds measured per count (default 20)
#   BENCH_RESTREAM_DESTINATIONS, BENCH_RESTREAM_SECONDS   restream: destination counts (0,1,2,4),
#                         seconds measured per count (20)
#   BENCH_ONAIR           the onair binary to measure (default: the one built here), e.g. another
#                         checkout's, for a before/after against nginx in the same conditions
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
WORK=${ONAIR_BENCH_WORK:-/tmp/onair-bench}
TARGET=${ONAIR_BENCH_TARGET:-$HOME/.cache/onair-bench-target}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports BASE..BASE+2: BENCH_PORT_BASE, or the first of 39080, 39180, … that is free.
if [[ -n ${BENCH_PORT_BASE:-} ]]; then
  BASE=$BENCH_PORT_BASE
else
  for BASE in $(seq 39080 100 39980); do
    port_free "$BASE" && port_free $((BASE + 1)) && port_free $((BASE + 2)) && port_free $((BASE + 3)) && break
  done
fi
HTTP_PORT=$BASE
RTMP_PORT=$((BASE + 1))
NGINX_PORT=$((BASE + 2))
WEBRTC_PORT=$((BASE + 3))
ENGINE_URL="http://127.0.0.1:$HTTP_PORT"
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
STEPS=${BENCH_STEPS:-400,1000,2000,3000,4000,5000,6000}
BISECT=${BENCH_BISECT:-2}
WARMUP=${BENCH_WARMUP:-3}
MEASURE=${BENCH_MEASURE:-6}
CPU_SECONDS=${BENCH_CPU_SECONDS:-30}
LATENCY_SIZE=${BENCH_LATENCY_SIZE:-1920x1080}
CLK_TCK=$(getconf CLK_TCK)
# The signing secret of this throw-away engine (no keyring needed); `onair obs` signs with it too.
export ONAIR_SIGNING_KEY=${ONAIR_SIGNING_KEY:-onair-bench-secret}
export ONAIR_LOG=${ONAIR_LOG:-warn}
# Everything on loopback, whatever the defaults (WebRTC binds 0.0.0.0 by default).
export ONAIR_WEBRTC_UDP=127.0.0.1:$WEBRTC_PORT ONAIR_WEBRTC_TCP=127.0.0.1:$WEBRTC_PORT ONAIR_WEBRTC_PUBLIC_IPS=127.0.0.1
export ONAIR_PUBLIC_HOST=127.0.0.1

ONAIR=${BENCH_ONAIR:-$TARGET/release/onair}
LOADGEN=$TARGET/release/onair-loadgen
SOURCE=$WORK/source-1080p30-6M.flv
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$WORK/run-$STAMP
SUMMARY=$RUN/summary.txt
# The built-in defaults (plus the ONAIR_* variables here), not the user's config file.
CONFIG=$RUN/onair.toml

SERVER_CPUS=()
CLIENT_CPUS=()
if [[ ${BENCH_PIN:-0} == 1 ]]; then
  SERVER_CPUS=(taskset -c 0)
  CLIENT_CPUS=(taskset -c 1)
fi

# ---------------------------------------------------------------------------------------------
# Processes: every background process is registered and stopped on exit.

PIDS=()

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

# start NAME CMD… — runs CMD in the background, output in $RUN/NAME.log; sets $LAST_PID.
start() {
  local name=$1
  shift
  "$@" >"$RUN/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# run_wait OUT ERR CMD… — CMD in the background (registered, so a signal stops it too) with
# stdout in OUT and stderr in ERR; waits for it and returns its exit status.
run_wait() {
  local out=$1 err=$2 pid status=0
  shift 2
  "$@" >"$out" 2>"$err" &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || status=$?
  return "$status"
}

# stop PID — TERM, then KILL after 5 s.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop_all — every registered process, newest first.
stop_all() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[$i]}"
  done
  PIDS=()
}

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  stop_all
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing ($2)"; }

json_field() { # json_field FIELD — reads one JSON object on stdin
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];process.stdout.write(v===undefined?"":String(v))})' "$1"
}

cpu_ticks() { # utime + stime of PID, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

machine() {
  local model cores
  model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  cores=$(nproc)
  printf '%s, %s cores, %s, %s MB RAM, Linux %s' "$model" "$cores" \
    "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)" \
    "$(uname -r)"
}

now_s() { date +%s.%N; }
pct_of_core() { # pct_of_core TICKS SECONDS
  awk -v d="$1" -v hz="$CLK_TCK" -v s="$2" 'BEGIN { printf "%.2f", d / hz / s * 100 }'
}

busy_pct() { # busy_pct SECONDS — whole-machine CPU use over SECONDS, in % of one core
  local a b
  a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit}' /proc/stat)
  sleep "$1"
  b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit}' /proc/stat)
  awk -v a="$a" -v b="$b" -v hz="$CLK_TCK" -v s="$1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / hz / s * 100 }'
}

# check_quiet WHAT — warns when something else is using the CPU; with BENCH_WAIT_QUIET=SECONDS,
# first waits up to that long for the machine to be quiet (< 15 % of a core busy over 3 s).
check_quiet() {
  local busy waited=0
  busy=$(busy_pct 2)
  while ((busy > 15 && waited < ${BENCH_WAIT_QUIET:-0})); do
    ((waited == 0)) && log "waiting for the machine to be quiet before '$1' (now ${busy} % of a core busy)"
    busy=$(busy_pct 3)
    waited=$((waited + 3))
  done
  if ((busy > 15)); then
    log "warning: ${busy} % of a core busy before '$1' (not counting the benchmark): the figures will suffer"
    ps -eo pcpu,comm --sort=-pcpu | head -4 | sed 's/^/    /' >&2
  fi
  say "[machine before '$1': ${busy} % of a core busy$( ((waited > 0)) && echo ", after waiting ${waited} s")]"
}

wait_http() { # wait_http URL SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not answer within $2 s"
}

wait_live() { # wait_live STREAM
  local i
  for ((i = 0; i < 300; i++)); do
    if curl -fsS "$ENGINE_URL/api/streams/$1" 2>/dev/null | grep -q '"live":true'; then
      return 0
    fi
    sleep 0.1
  done
  die "stream $1 did not go live within 30 s (see $RUN/*.log)"
}

publish_url() { # publish_url STREAM — the signed RTMP URL
  "$ONAIR" obs "$1" --config "$CONFIG" --host "127.0.0.1:$RTMP_PORT" --json | json_field url
}

ENGINE_PID=
start_engine() {
  port_free "$HTTP_PORT" || die "port $HTTP_PORT is taken (set BENCH_PORT_BASE)"
  port_free "$RTMP_PORT" || die "port $RTMP_PORT is taken (set BENCH_PORT_BASE)"
  port_free "$WEBRTC_PORT" || die "port $WEBRTC_PORT is taken (set BENCH_PORT_BASE)"
  mkdir -p "$RUN/data"
  start engine "${SERVER_CPUS[@]}" "$ONAIR" serve --config "$CONFIG" --http "127.0.0.1:$HTTP_PORT" \
    --rtmp "127.0.0.1:$RTMP_PORT" --data-dir "$RUN/data"
  ENGINE_PID=$LAST_PID
  wait_http "$ENGINE_URL/healthz" 20
}

# publish_file STREAM — the pre-encoded clip, looped, in real time, without re-encoding.
publish_file() {
  local url
  url=$(publish_url "$1")
  start "publish-$1" "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning -re -stream_loop -1 \
    -i "$SOURCE" -c copy -f flv "$url"
  PUBLISH_PID=$LAST_PID
}

# start_nginx_rtmp NAME DIRECTIVES [PIN…] — nginx-rtmp (one worker) listening on
# 127.0.0.1:$NGINX_PORT with one application `app` holding DIRECTIVES; its files in $RUN/NAME,
# its output in $RUN/NAME.log; PIN is the CPU pinning prefix (SERVER_CPUS or CLIENT_CPUS). Sets
# $LAST_PID (the master).
start_nginx_rtmp() {
  local name=$1 directives=$2
  shift 2
  need nginx "apt-get install nginx libnginx-mod-rtmp"
  [[ -r /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || die "nginx-rtmp is missing (apt-get install libnginx-mod-rtmp)"
  port_free "$NGINX_PORT" || die "port $NGINX_PORT is taken (set BENCH_PORT_BASE)"
  local dir=$RUN/$name
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 256; }
rtmp { server { listen 127.0.0.1:$NGINX_PORT; application app { $directives } } }
CONF
  start "$name" "$@" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
}

# ---------------------------------------------------------------------------------------------
# Setup

prepare() {
  need ffmpeg "apt-get install ffmpeg"
  need cargo "install Rust with rustup"
  need curl "apt-get install curl"
  need node "apt-get install nodejs"
  mkdir -p "$WORK" "$RUN"
  : >"$SUMMARY"
  echo "# empty: built-in defaults (bench/run.sh)" >"$CONFIG"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building onair and onair-loadgen (release, $TARGET)"
    if [[ -z ${BENCH_ONAIR:-} ]]; then
      (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p onair) >"$RUN/build.log" 2>&1 ||
        die "cargo build failed, see $RUN/build.log"
    fi
    CARGO_TARGET_DIR=$TARGET cargo build --release --locked --manifest-path "$HERE/loadgen/Cargo.toml" \
      >>"$RUN/build.log" 2>&1 || die "loadgen build failed, see $RUN/build.log"
  fi
  [[ -x $ONAIR && -x $LOADGEN ]] || die "binaries missing in $TARGET/release (unset BENCH_NO_BUILD)"
  if [[ ! -s $SOURCE ]]; then
    log "encoding the 60 s source clip once: 1920x1080 30 fps, x264 ultrafast 6 Mb/s, GOP 60, no B-frames, AAC"
    ffmpeg -hide_banner -nostdin -loglevel error -y \
      -f lavfi -i testsrc2=s=1920x1080:r=30 -f lavfi -i sine=f=440:r=48000 -t 60 \
      -c:v libx264 -preset ultrafast -tune zerolatency -b:v 6M -maxrate 6M -bufsize 6M -g 60 -bf 0 \
      -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SOURCE.tmp" && mv "$SOURCE.tmp" "$SOURCE"
  fi
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit+=" + uncommitted changes"
  fi
  say "OnAir benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$([[ -n ${BENCH_ONAIR:-} ]] && echo " (engine: $BENCH_ONAIR)")"
  say "machine: $(machine)"
  say "pinning: $([[ ${BENCH_PIN:-0} == 1 ]] && echo 'server on CPU 0, load generator, publisher and mirror on CPU 1' || echo 'none (server, load generator and publisher share both cores)')"
  local v br
  v=$(ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height,r_frame_rate -of csv=p=0 "$SOURCE" |
    awk -F, '{ split($4, r, "/"); printf "%s %sx%s %g fps", $1, $2, $3, r[1] / r[2] }')
  br=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$SOURCE")
  say "source:  $v, GOP 2 s, no B-frames, + AAC; $(awk -v b="$br" 'BEGIN { printf "%.2f", b / 1e6 }') Mb/s in all (60 s clip, looped)"
  say "logs and raw results: $RUN"
}

# ---------------------------------------------------------------------------------------------
# cpu: the engine packaging one stream, then four, no viewers

sample_engine() { # sample_engine SECONDS — sets CPU_PCT (of one core), RSS_MB, HWM_MB
  local t0 t1
  t0=$(cpu_ticks "$ENGINE_PID")
  sleep "$1"
  t1=$(cpu_ticks "$ENGINE_PID")
  CPU_PCT=$(pct_of_core $((t1 - t0)) "$1")
  RSS_MB=$(awk -v k="$(rss_kb "$ENGINE_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
  HWM_MB=$(awk -v k="$(hwm_kb "$ENGINE_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
}

step_cpu() {
  check_quiet cpu
  log "cpu: engine packaging 1080p30 6 Mb/s, ${CPU_SECONDS} s windows"
  start_engine
  sleep 2
  local idle_mb pub_t0 pub_t1 one_cpu one_rss one_hwm
  idle_mb=$(awk -v k="$(rss_kb "$ENGINE_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
  publish_file bench
  wait_live bench
  local pub=$PUBLISH_PID
  # Let the sliding window (6 segments of 2 s) fill before measuring.
  sleep 15
  pub_t0=$(cpu_ticks "$pub")
  sample_engine "$CPU_SECONDS"
  pub_t1=$(cpu_ticks "$pub")
  one_cpu=$CPU_PCT one_rss=$RSS_MB one_hwm=$HWM_MB
  local info
  info=$(curl -fsS "$ENGINE_URL/api/streams/bench")
  say ""
  say "== cpu: engine packaging one stream (no viewers), ${CPU_SECONDS} s"
  say "stream as the engine sees it: $(echo "$info" | json_field bitrate_kbps) kb/s, $(echo "$info" | json_field fps) fps"
  say "engine CPU: ${one_cpu} % of one core    (publisher, ffmpeg -c copy: $(pct_of_core $((pub_t1 - pub_t0)) "$CPU_SECONDS") %)"
  say "engine RSS: ${one_rss} MB (peak ${one_hwm} MB; ${idle_mb} MB idle before the publish, so +$(awk -v a="$one_rss" -v b="$idle_mb" 'BEGIN { printf "%.1f", a - b }') MB for the stream)"

  log "cpu: three more streams (four in all)"
  local s
  for s in bench2 bench3 bench4; do publish_file "$s"; done
  for s in bench2 bench3 bench4; do wait_live "$s"; done
  sleep 15
  sample_engine "$CPU_SECONDS"
  say "four streams: engine CPU ${CPU_PCT} % of one core ($(awk -v c="$CPU_PCT" 'BEGIN { printf "%.2f", c / 4 }') % per stream), RSS ${RSS_MB} MB (peak ${HWM_MB} MB; $(awk -v a="$RSS_MB" -v b="$idle_mb" 'BEGIN { printf "%.1f", (a - b) / 4 }') MB per stream above idle)"
  stop_all
  cpu_anchor "$one_cpu" "$one_rss"
}

# cpu_anchor ENGINE_CPU ENGINE_RSS — the same clip into nginx-rtmp packaging HLS (MPEG-TS
# segments of 2 s, a 12 s playlist, on disk), measured like the engine's one stream.
cpu_anchor() {
  local dir=$RUN/nginx-rtmp-hls
  mkdir -p "$dir/hls"
  log "cpu: the anchor, nginx-rtmp packaging the same stream as HLS"
  start_nginx_rtmp nginx-rtmp-hls "live on; hls on; hls_path $dir/hls; hls_fragment 2s; hls_playlist_length 12s;" \
    "${SERVER_CPUS[@]}"
  local master=$LAST_PID i pids t0 t1 ticks rss=0 p
  start publish-nginx "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning -re -stream_loop -1 \
    -i "$SOURCE" -c copy -f flv "rtmp://127.0.0.1:$NGINX_PORT/app/bench"
  for ((i = 0; i < 100; i++)); do
    [[ -s $dir/hls/bench.m3u8 ]] && break
    sleep 0.2
  done
  [[ -s $dir/hls/bench.m3u8 ]] || die "nginx-rtmp wrote no playlist within 20 s, see $RUN/nginx-rtmp-hls.log and $dir/error.log"
  sleep 15
  pids="$master$(pgrep -P "$master" | sed 's/^/+/' | tr -d '\n')"
  t0=$(sum_ticks "$pids")
  sleep "$CPU_SECONDS"
  t1=$(sum_ticks "$pids")
  ticks=$((t1 - t0))
  for p in ${pids//+/ }; do rss=$((rss + $(rss_kb "$p"))); done
  local ncpu nrss
  ncpu=$(pct_of_core "$ticks" "$CPU_SECONDS")
  nrss=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
  say "anchor, nginx-rtmp $(nginx -v 2>&1 | sed 's|.*/||') packaging the same clip as HLS (TS, 2 s segments, on disk), master + worker:"
  say "  CPU ${ncpu} % of one core, RSS ${nrss} MB; engine / nginx-rtmp: CPU $(awk -v a="$1" -v b="$ncpu" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')x, RSS $(awk -v a="$2" -v b="$nrss" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')x"
  stop_all
}

# ---------------------------------------------------------------------------------------------
# latency: a live source with the capture time burnt in, read back from the viewer page

# measure_latency QUERY TRANSPORT — the viewer page with ?transport=QUERY; expects TRANSPORT.
measure_latency() {
  local result
  run_wait "$RUN/latency-$2.json" "$RUN/latency-$2.log" "${CLIENT_CPUS[@]}" node "$HERE/latency.mjs" \
    "$ENGINE_URL/latency?transport=$1" --expect-transport "$2" --block "$LATENCY_BLOCK" --duration 20 --warmup 5 \
    --screenshot "$RUN/latency-$2.png" || true
  result=$(tail -n 1 "$RUN/latency-$2.json")
  [[ -n $result ]] || result='{"ok":false,"reason":"no output"}'
  lf() { echo "$result" | json_field "$1"; }
  if [[ $(lf ok) != true ]]; then
    say "$2: not measured: $(lf reason)"
    return 0
  fi
  say "$2: median $(lf median_ms) ms, p95 $(lf p95_ms) ms (min $(lf min_ms), max $(lf max_ms); $(lf samples) frames read, $(lf unreadable_frames) unreadable; $(lf video), $(lf frames_decoded) frames decoded, $(lf frames_dropped) dropped)"
  if [[ $2 == llhls ]]; then
    say "       hls.js's own latency estimate: median $(lf hls_latency_median_ms) ms, p95 $(lf hls_latency_p95_ms) ms; its target $(lf hls_target_latency_ms) ms (PART-HOLD-BACK)"
  fi
}

step_latency() {
  [[ -x ${ONAIR_CHROMIUM:-/usr/bin/chromium} ]] || die "Chromium is missing (apt-get install chromium, or set ONAIR_CHROMIUM)"
  if [[ -z ${ONAIR_PLAYWRIGHT:-} && ! -d $ROOT/tests/browser/node_modules/playwright-core ]]; then
    log "installing playwright-core for tests/browser (npm ci)"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund) >"$RUN/npm.log" 2>&1 || die "npm ci failed, see $RUN/npm.log"
  fi
  check_quiet latency
  local w=${LATENCY_SIZE%x*} h=${LATENCY_SIZE#*x}
  LATENCY_BLOCK=$((h / 27))
  local block=$LATENCY_BLOCK
  log "latency: live ${w}x${h} 30 fps x264 ultrafast/zerolatency 6 Mb/s with the wall clock burnt in; Chromium on the viewer page"
  start_engine
  local url
  url=$(publish_url latency)
  # settb+setpts=RTCTIME: each frame's timestamp becomes the wall clock (µs) when it left the
  # real-time source; geq draws bit i of (that in ms mod 2^24) as square i, then a white and a
  # black square; the timestamps are then made regular again for the encoder.
  local strip="if(lt(X/$block,24),if(mod(floor(T*1000/pow(2,floor(X/$block))),2),235,16),if(lt(X/$block,25),235,16))"
  start publish-latency "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning \
    -re -f lavfi -i "testsrc2=s=${w}x${h}:r=30" -re -f lavfi -i sine=f=440:r=48000 \
    -filter_complex "[0:v]settb=AVTB,setpts=RTCTIME,split[a][b];[b]crop=$((26 * block)):$block:0:0,format=gray,geq=lum='$strip'[s];[a][s]overlay=0:0,settb=1/30,setpts=N,format=yuv420p[v]" \
    -map '[v]' -map 1:a -c:v libx264 -preset ultrafast -tune zerolatency -b:v 6M -maxrate 6M -bufsize 6M \
    -g 60 -bf 0 -c:a aac -b:a 128k -f flv "$url"
  local enc=$LAST_PID
  wait_live latency
  sleep 2
  local e0 e1 w0 w1
  e0=$(cpu_ticks "$enc")
  w0=$(now_s)
  say ""
  say "== latency: glass-to-glass on loopback, ${w}x${h} 30 fps live source, viewer page in headless Chromium, 20 s"
  measure_latency hls llhls
  e1=$(cpu_ticks "$enc")
  w1=$(now_s)
  local info
  info=$(curl -fsS "$ENGINE_URL/api/streams/latency" || echo '{}')
  say "source: live encoder used $(pct_of_core $((e1 - e0)) "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')") % of a core; the engine saw $(echo "$info" | json_field fps) fps, $(echo "$info" | json_field bitrate_kbps) kb/s"
  if [[ ${BENCH_LATENCY_WEBRTC:-1} == 1 ]]; then
    measure_latency webrtc webrtc
  fi
  stop_all
}

# ---------------------------------------------------------------------------------------------
# load: simulated LL-HLS players against the engine, then against nginx serving a disk mirror

nginx_conf() {
  local dir=$RUN/nginx
  mkdir -p "$dir/tmp" "$RUN/www"
  cat >"$dir/nginx.conf" <<EOF
# nginx serving the mirrored stream from disk (written by bench/run.sh).
worker_processes auto;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  types { application/vnd.apple.mpegurl m3u8; video/mp4 mp4; video/iso.segment m4s; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $RUN/www;
    location ~ \.m3u8\$ { add_header Cache-Control "no-cache, no-store"; }
    location ~ \.m4s\$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
  }
}
EOF
}

summary_result() { # summary_result STEP LABEL FIELD — from STEP's summary line for server LABEL
  grep '"summary":true' "$RUN/$1.jsonl" | grep "\"server\":\"$2\"" | json_field "$3"
}
load_result() { summary_result load "$@"; }

# The engine live with the bench stream, its copy on disk, and nginx serving that copy; sets
# NGINX_PIDS (nginx and its workers, '+'-joined) for the CPU accounting.
start_engine_and_nginx() {
  need nginx "apt-get install nginx-light"
  start_engine
  publish_file bench
  wait_live bench
  start mirror "${CLIENT_CPUS[@]}" "$LOADGEN" mirror --url "$ENGINE_URL/live/bench/llhls.m3u8" --root "$RUN/www"
  port_free "$NGINX_PORT" || die "port $NGINX_PORT is taken (set BENCH_PORT_BASE)"
  nginx_conf
  start nginx "${SERVER_CPUS[@]}" nginx -c "$RUN/nginx/nginx.conf" -g 'daemon off;'
  local nginx_pid=$LAST_PID
  wait_http "$NGINX_URL/live/bench/llhls.m3u8" 20
  NGINX_PIDS=$(echo "$nginx_pid" $(pgrep -P "$nginx_pid") | tr ' ' '+')
}

step_load() {
  check_quiet load
  start_engine_and_nginx
  sleep 3
  local nginx_pids=$NGINX_PIDS targets
  targets="engine,blocking,$ENGINE_URL/live/bench/llhls.m3u8,$ENGINE_PID"
  if [[ ${BENCH_ENGINE_POLL:-1} == 1 ]]; then
    targets+=" engine-poll,poll,$ENGINE_URL/live/bench/llhls.m3u8,$ENGINE_PID"
  fi
  targets+=" nginx,poll,$NGINX_URL/live/bench/llhls.m3u8,$nginx_pids"
  log "load: $targets"
  log "load: steps $STEPS, then $BISECT refinements; 2+${WARMUP}+${MEASURE} s each, the servers taking turns"
  : >"$RUN/load.txt"
  tail -n +1 -f "$RUN/load.txt" >&2 & # progress on the terminal
  local progress=$!
  PIDS+=("$progress")
  run_wait "$RUN/load.jsonl" "$RUN/load.txt" "${CLIENT_CPUS[@]}" "$LOADGEN" load --targets "$targets" \
    --monitor "$ENGINE_URL/live/bench/llhls.m3u8" --steps "$STEPS" --bisect "$BISECT" --warmup "$WARMUP" \
    --measure "$MEASURE" --stagger 2 --same-agent "${BENCH_SAME_UA:-0}" || die "load generator failed, see $RUN/load.txt"
  sleep 0.3
  stop_pid "$progress"

  local e n ep
  e=$(load_result engine max_players)
  n=$(load_result nginx max_players)
  say ""
  say "== load: simulated LL-HLS players (1080p30 6 Mb/s), one keep-alive connection each; a player 'keeps up' when it"
  say "   had no error, stalled < 1 % of the step and got >= 90 % of the parts; a step passes when >= 99 % keep up;"
  say "   a near miss (>= 50 % kept up) is tried once more: no = failed, to be retried; yes* = passed the retry; NO = failed."
  say "   engine = blocking playlist reloads, engine-poll and nginx = playlist polled every part target; part = part"
  say "   request time, late = part received after it appeared on the engine (ms); CPU in % of one core: server, load"
  say "   generator, other (other processes, publisher, mirror, kernel work charged to no process), whole machine"
  grep -E '^server ' "$RUN/load.txt" | head -1 | tee -a "$SUMMARY"
  local label
  for label in engine engine-poll nginx; do
    grep -E "^$label " "$RUN/load.txt" | tee -a "$SUMMARY" || true
  done
  say "engine, blocking reload (the LL-HLS way): max $e players, $(load_result engine mbit_s_at_max) Mbit/s; server CPU $(load_result engine server_cpu_pct_per_gbit_s) % of a core per Gbit/s"
  if [[ ${BENCH_ENGINE_POLL:-1} == 1 ]]; then
    ep=$(load_result engine-poll max_players)
    say "engine, players polling every part target (as against nginx): max $ep players, $(load_result engine-poll mbit_s_at_max) Mbit/s; server CPU $(load_result engine-poll server_cpu_pct_per_gbit_s) % of a core per Gbit/s"
  fi
  say "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), the same bytes from disk, players polling: max $n players, $(load_result nginx mbit_s_at_max) Mbit/s; server CPU $(load_result nginx server_cpu_pct_per_gbit_s) % of a core per Gbit/s"
  if [[ $n -gt 0 ]]; then
    say "engine / nginx: $(awk -v e="$e" -v n="$n" 'BEGIN { printf "%.0f", e / n * 100 }') % (blocking)$([[ -n ${ep:-} ]] && awk -v e="$ep" -v n="$n" 'BEGIN { printf ", %.0f %% (polling)", e / n * 100 }')"
  fi
  stop_all
}

# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# fanout: CPU-seconds per GiB, 50 keep-alive clients fetching the newest segment, vs nginx

fanout_result() { summary_result fanout "$@"; }

step_fanout() {
  check_quiet fanout
  start_engine_and_nginx
  sleep 5 # a few complete segments on both
  local nginx_pids=$NGINX_PIDS clients=${BENCH_FANOUT_CLIENTS:-50} seconds=${BENCH_FANOUT_SECONDS:-10} rounds=${BENCH_FANOUT_ROUNDS:-3}
  log "fanout: $clients clients fetching the newest segment, ${seconds} s per turn, $rounds turns each, engine and nginx alternating"
  local l0 l1
  l0=$(cut -d' ' -f1-3 /proc/loadavg)
  run_wait "$RUN/fanout.jsonl" "$RUN/fanout.txt" "${CLIENT_CPUS[@]}" "$LOADGEN" fanout \
    --targets "engine,$ENGINE_URL/live/bench/llhls.m3u8,$ENGINE_PID nginx,$NGINX_URL/live/bench/llhls.m3u8,$nginx_pids" \
    --clients "$clients" --seconds "$seconds" --rounds "$rounds" || die "fanout failed, see $RUN/fanout.txt"
  l1=$(cut -d' ' -f1-3 /proc/loadavg)
  say ""
  say "== fanout: $clients keep-alive clients fetching the newest complete segment (1080p30 6 Mb/s, 2 s) as fast as"
  say "   they can, ${seconds} s turns, engine and nginx (sendfile, the same bytes from disk) alternating, $rounds turns each;"
  say "   server CPU = utime + stime from /proc; load average before/after: $l0 / $l1"
  grep -vE '^(engine|nginx):' "$RUN/fanout.txt" | tee -a "$SUMMARY" || true
  say "engine: $(fanout_result engine cpu_s_per_gib) CPU s/GiB; nginx: $(fanout_result nginx cpu_s_per_gib) CPU s/GiB; engine / nginx = $(fanout_result engine vs_reference)x"
  stop_all
}

# ---------------------------------------------------------------------------------------------
# edge: players behind nginx's proxy_cache (docs/edge/nginx.conf); what reaches the origin

# The engine's onair_sent_bytes_total{transport="hls"} and onair_hls_requests_total by kind, one
# line: "BYTES PLAYLIST BLOCKING PART".
origin_counters() {
  curl -fsS "$ENGINE_URL/metrics" | awk '
    /^onair_sent_bytes_total\{transport="hls"\}/ { b = $2 }
    /^onair_hls_requests_total\{kind="playlist"\}/ { p = $2 }
    /^onair_hls_requests_total\{kind="blocking_playlist"\}/ { bp = $2 }
    /^onair_hls_requests_total\{kind="part"\}/ { pt = $2 }
    END { printf "%d %d %d %d\n", b, p, bp, pt }'
}

# nginx_edge_conf DIR — nginx with docs/edge/nginx.conf in front of the engine, on NGINX_PORT.
nginx_edge_conf() {
  local dir=$1
  mkdir -p "$dir/cache"
  sed -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$HTTP_PORT;|" -e "s|listen 8081;|listen 127.0.0.1:$NGINX_PORT;|" \
    -e "s|/var/cache/nginx/onair|$dir/cache|" "$ROOT/docs/edge/nginx.conf" >"$dir/onair.conf"
  {
    echo "# nginx as a caching proxy in front of the engine: docs/edge/nginx.conf (written by bench/run.sh)."
    echo "worker_processes auto;"
    echo "worker_rlimit_nofile 65536;"
    echo "pid $dir/nginx.pid;"
    echo "error_log $dir/error.log warn;"
    echo "events { worker_connections 16384; }"
    echo "http {"
    echo "  access_log off;"
    echo "  client_body_temp_path $dir/tmp-body;"
    echo "  proxy_temp_path $dir/tmp-proxy;"
    echo "  fastcgi_temp_path $dir/tmp-fastcgi;"
    echo "  uwsgi_temp_path $dir/tmp-uwsgi;"
    echo "  scgi_temp_path $dir/tmp-scgi;"
    echo "  include $dir/onair.conf;"
    echo "}"
  } >"$dir/nginx.conf"
}

sum_ticks() { # sum_ticks PID+PID+… — utime + stime of those still running
  local p t=0
  for p in ${1//+/ }; do
    [[ -r /proc/$p/stat ]] && t=$((t + $(cpu_ticks "$p")))
  done
  echo "$t"
}

step_edge() {
  need nginx "apt-get install nginx-light"
  check_quiet edge
  start_engine
  publish_file bench
  wait_live bench
  port_free "$NGINX_PORT" || die "port $NGINX_PORT is taken (set BENCH_PORT_BASE)"
  local dir=$RUN/nginx-edge
  nginx_edge_conf "$dir"
  start nginx-edge "${SERVER_CPUS[@]}" nginx -c "$dir/nginx.conf" -g 'daemon off;'
  local nginx_pid=$LAST_PID nginx_pids
  wait_http "$NGINX_URL/live/bench/llhls.m3u8" 20
  # The master and its workers (not the cache loader, which exits after a minute).
  nginx_pids=$(echo "$nginx_pid" $(pgrep -P "$nginx_pid" -f 'worker process') | tr ' ' '+')
  sleep 10 # the sliding window fills
  local counts=${BENCH_EDGE_PLAYERS:-0,40,200} seconds=${BENCH_EDGE_SECONDS:-20} n
  say ""
  say "== edge: LL-HLS players (blocking reload, as in load) behind nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') with"
  say "   docs/edge/nginx.conf (proxy_cache, cache lock), ${seconds} s per count. What reaches the engine (the"
  say "   origin): its CPU (utime + stime: % of one core, CPU-seconds), the HLS bytes it sent, its HLS requests"
  say "   by kind; nginx's CPU; then the load generator's line for the players (ok = players that kept up)"
  say "$(printf '%7s %9s %9s %9s %9s %9s %9s %7s %10s' players 'eng CPU%' 'eng CPU-s' 'eng MB' 'eng Mb/s' playlists blocking parts 'nginx CPU%')"
  for n in ${counts//,/ }; do
    local gen_pid=
    if ((n > 0)); then
      "${CLIENT_CPUS[@]}" "$LOADGEN" load --targets "edge,blocking,$NGINX_URL/live/bench/llhls.m3u8,$ENGINE_PID" \
        --monitor "$ENGINE_URL/live/bench/llhls.m3u8" --steps "$n" --bisect 0 --retries 0 --warmup 3 \
        --measure "$seconds" --stagger 2 --same-agent "${BENCH_SAME_UA:-0}" >"$RUN/edge-$n.jsonl" 2>"$RUN/edge-$n.txt" &
      gen_pid=$!
      PIDS+=("$gen_pid")
      sleep 6 # the load generator's monitor (1 s), the players joining (2 s), its warm-up (3 s)
    fi
    local c0 c1 k0 k1 m0 m1 t0 t1 secs
    read -r -a m0 < <(origin_counters)
    c0=$(cpu_ticks "$ENGINE_PID")
    k0=$(sum_ticks "$nginx_pids")
    t0=$(now_s)
    sleep "$seconds"
    t1=$(now_s)
    c1=$(cpu_ticks "$ENGINE_PID")
    k1=$(sum_ticks "$nginx_pids")
    read -r -a m1 < <(origin_counters)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    say "$(printf '%7s %9s %9s %9s %9s %9s %9s %7s %10s' "$n" "$(pct_of_core $((c1 - c0)) "$secs")" \
      "$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')" \
      "$(awk -v b=$((m1[0] - m0[0])) 'BEGIN { printf "%.1f", b / 1e6 }')" \
      "$(awk -v b=$((m1[0] - m0[0])) -v s="$secs" 'BEGIN { printf "%.2f", b * 8 / s / 1e6 }')" \
      $((m1[1] - m0[1])) $((m1[2] - m0[2])) $((m1[3] - m0[3])) "$(pct_of_core $((k1 - k0)) "$secs")")"
    if [[ -n $gen_pid ]]; then
      wait "$gen_pid" || die "load generator failed, see $RUN/edge-$n.txt"
      grep -E '^(server|edge) ' "$RUN/edge-$n.txt" | sed 's/^/        /' | tee -a "$SUMMARY" || true
    fi
  done
  stop_all
}

# ---------------------------------------------------------------------------------------------
# restream: what each restream destination costs the engine (relaying the stream as published to
# nginx-rtmp on loopback, one application, one stream name per destination)

# restream_states — the states of the bench stream's destinations, one line each
restream_states() {
  "$ONAIR" restream bench --data-dir "$RUN/data" list --json 2>/dev/null |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      for (const d of JSON.parse(s || "[]")) console.log(d.name, d.state, d.bitrate_kbps, d.dropped_frames); });'
}

step_restream() {
  check_quiet restream
  start_nginx_rtmp nginx-rtmp "live on;" "${CLIENT_CPUS[@]}"
  local nginx_pid=$LAST_PID
  start_engine
  publish_file bench
  wait_live bench
  sleep 5
  local counts=${BENCH_RESTREAM_DESTINATIONS:-0,1,2,4} seconds=${BENCH_RESTREAM_SECONDS:-20} n have=0 base_ticks=
  say ""
  say "== restream: the stream as published relayed to N destinations (nginx-rtmp 127.0.0.1, one application,"
  say "   a stream name each), ${seconds} s per count: engine CPU (utime + stime, % of one core), its extra CPU per"
  say "   destination over N = 0, what the destinations were sent (the engine's own figure) and frames dropped"
  say "$(printf '%12s %9s %9s %14s %13s %8s' destinations 'eng CPU%' 'eng RSS' 'extra/dest %' 'sent Mb/s' dropped)"
  for n in ${counts//,/ }; do
    while ((have < n)); do
      have=$((have + 1))
      "$ONAIR" restream bench --data-dir "$RUN/data" add "d$have" "rtmp://127.0.0.1:$NGINX_PORT/app" \
        --key "bench$have" >>"$RUN/restream-cli.log" 2>&1 || die "onair restream add failed, see $RUN/restream-cli.log"
    done
    if ((n > 0)); then
      local i
      for ((i = 0; i < 100; i++)); do
        [[ $(restream_states | awk '$2 == "live"' | wc -l) -ge $n ]] && break
        sleep 0.2
      done
      ((i < 100)) || die "restream destinations not live after 20 s: $(restream_states | tr '\n' ';')"
      sleep 3
    fi
    local c0 c1 t0 t1 secs ticks
    c0=$(cpu_ticks "$ENGINE_PID")
    t0=$(now_s)
    sleep "$seconds"
    t1=$(now_s)
    c1=$(cpu_ticks "$ENGINE_PID")
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    ticks=$((c1 - c0))
    [[ -n $base_ticks ]] || base_ticks=$ticks
    local per="-" kbps dropped
    if ((n > 0)); then
      per=$(awk -v t="$ticks" -v b="$base_ticks" -v n="$n" -v hz="$CLK_TCK" -v s="$secs" \
        'BEGIN { printf "%.2f", (t - b) / n / hz / s * 100 }')
    fi
    kbps=$(restream_states | awk '{ k += $3 } END { printf "%.2f", k / 1000 }')
    dropped=$(restream_states | awk '{ d += $4 } END { print d + 0 }')
    say "$(printf '%12s %9s %9s %14s %13s %8s' "$n" "$(pct_of_core "$ticks" "$secs")" "$(($(rss_kb "$ENGINE_PID") / 1024)) MB" \
      "$per" "$kbps" "$dropped")"
  done
  stop_all
  kill "$nginx_pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# abuse: the attack of tests/tests/abuse.rs from outside the engine, with viewers watching

ABUSE_SOURCE=$WORK/source-360p30-1M.flv

step_abuse() {
  [[ -x ${ONAIR_CHROMIUM:-/usr/bin/chromium} ]] || die "Chromium is missing (apt-get install chromium, or set ONAIR_CHROMIUM)"
  if [[ ! -d $ROOT/tests/browser/node_modules/playwright-core ]]; then
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund) >"$RUN/npm.log" 2>&1 || die "npm ci failed, see $RUN/npm.log"
  fi
  if [[ ! -s $ABUSE_SOURCE ]]; then
    ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i testsrc2=s=640x360:r=30 -f lavfi -i sine=f=440:r=48000 \
      -t 60 -c:v libx264 -preset ultrafast -tune zerolatency -b:v 1M -g 60 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 96k \
      -f flv "$ABUSE_SOURCE.tmp" && mv "$ABUSE_SOURCE.tmp" "$ABUSE_SOURCE"
  fi
  check_quiet abuse
  start_engine
  local url
  url=$(publish_url abuse)
  start publish-abuse "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning -re -stream_loop -1 \
    -i "$ABUSE_SOURCE" -c copy -f flv "$url"
  wait_live abuse
  local ready=$RUN/abuse-ready
  log "abuse: two viewers (WebRTC, LL-HLS) watched for 45 s; the attack starts once both play"
  start watch "${CLIENT_CPUS[@]}" node "$ROOT/tests/browser/watch.mjs" "$ENGINE_URL/abuse?transport=webrtc" \
    "$ENGINE_URL/abuse?transport=llhls" --duration 45000 --stall-ms 1500 --ready-file "$ready"
  local watch_pid=$LAST_PID i
  for ((i = 0; i < 600; i++)); do
    [[ -e $ready ]] && break
    sleep 0.1
  done
  [[ -e $ready ]] || die "the viewers did not play within 60 s (see $RUN/watch.log)"
  sleep 2
  # The same new viewer without an attack, for comparison.
  run_wait "$RUN/newcomer-quiet.log" /dev/null "${CLIENT_CPUS[@]}" node "$ROOT/tests/browser/play.mjs" \
    "$ENGINE_URL/abuse" --min-advance 1 --timeout 60000 || true
  local rss0 t0 c0 t1 c1 peak=0 r
  rss0=$(rss_kb "$ENGINE_PID")
  t0=$(now_s)
  c0=$(cpu_ticks "$ENGINE_PID")
  start newcomer "${CLIENT_CPUS[@]}" node "$ROOT/tests/browser/play.mjs" "$ENGINE_URL/abuse" --min-advance 1 --timeout 60000
  local newcomer_pid=$LAST_PID
  start attack "${CLIENT_CPUS[@]}" node "$HERE/abuse.mjs" "$ENGINE_URL" "127.0.0.1:$RTMP_PORT" abuse
  local attack_pid=$LAST_PID
  while kill -0 "$attack_pid" 2>/dev/null; do
    r=$(rss_kb "$ENGINE_PID")
    ((r > peak)) && peak=$r
    sleep 0.2
  done
  c1=$(cpu_ticks "$ENGINE_PID")
  t1=$(now_s)
  wait "$newcomer_pid" || true
  wait "$watch_pid" || true
  local secs attack newcomer watched
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  attack=$(tail -n 1 "$RUN/attack.log")
  newcomer=$(grep '^{' "$RUN/newcomer.log" | tail -n 1)
  watched=$(grep '^{' "$RUN/watch.log" | tail -n 1)
  say ""
  say "== abuse: the attack of tests/tests/abuse.rs (3000 WHEP offers 64 at a time, 300 idle + 300 slowloris HTTP"
  say "   connections, 300 half-open RTMP ones, at once) on a 640x360 1 Mb/s stream two Chromium viewers watch"
  say "attack: $attack"
  say "engine during the attack (${secs} s): CPU $(pct_of_core $((c1 - c0)) "$secs") % of one core; RSS $((rss0 / 1024)) MB before, peak $((peak / 1024)) MB"
  say "viewers watching: $watched"
  local quiet
  quiet=$(grep '^{' "$RUN/newcomer-quiet.log" | tail -n 1)
  say "new viewer (play.mjs: Chromium launch to the page playing) started with the attack: $(echo "$newcomer" | json_field playingAtMs) ms over $(echo "$newcomer" | json_field transport) (ok: $(echo "$newcomer" | json_field ok)); without an attack: $(echo "$quiet" | json_field playingAtMs) ms over $(echo "$quiet" | json_field transport)"
  stop_all
}

main() {
  local what=${1:-all}
  case $what in
    all | cpu | latency | load | fanout | abuse | edge | restream) ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown step '$what' (all, cpu, latency, load, fanout, abuse, edge, restream)" ;;
  esac
  # Restream keys live in the OS keyring: run in a private Secret Service (its keyring file in
  # the work dir), as scripts/run.sh does for a machine without one.
  if [[ ($what == restream || $what == all) && -z ${BENCH_IN_KEYRING:-} ]]; then
    need dbus-run-session "apt-get install dbus"
    need gnome-keyring-daemon "apt-get install gnome-keyring"
    mkdir -p "$WORK/keyring"
    XDG_DATA_HOME=$WORK/keyring BENCH_IN_KEYRING=1 exec dbus-run-session -- sh -c \
      'eval "$(printf onair-bench | gnome-keyring-daemon --unlock --components=secrets)" >/dev/null
       eval "$(gnome-keyring-daemon --start --components=secrets)" >/dev/null
       export GNOME_KEYRING_CONTROL; exec "$0" "$@"' "$0" "$@"
  fi
  local t0=$SECONDS
  prepare
  case $what in
    all)
      step_cpu
      step_latency
      step_load
      step_fanout
      step_abuse
      step_edge
      step_restream
      ;;
    cpu) step_cpu ;;
    latency) step_latency ;;
    load) step_load ;;
    fanout) step_fanout ;;
    abuse) step_abuse ;;
    edge) step_edge ;;
    restream) step_restream ;;
  esac
  say ""
  say "total time: $((SECONDS - t0)) s; command: bench/run.sh $what"
  log "summary:"
  cat "$SUMMARY" >&2
}

main "$@"
