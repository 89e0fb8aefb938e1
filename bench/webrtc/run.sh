#!/usr/bin/env bash
# OnAir WebRTC (WHEP) benchmark, loopback only.
#
#   bench/webrtc/run.sh [all|latency|ttff|viewers]      (default: all; see bench/webrtc/README.md)
#
#   latency  glass-to-glass: live x264 zerolatency encode with the wall clock burnt in, viewer page
#            over WebRTC in headless Chromium, clock read back from each presented frame
#   ttff     time to first frame of a new viewer (N page loads)
#   viewers  engine CPU and RSS per WebRTC viewer at 6 Mb/s, with Rust WHEP load clients
#            (bench/webrtc/whepload: rtc sans-IO peers that count SRTP packets, no decryption),
#            plus the engine's own once-a-second stats (busy time per WebRTC shard, packets sent,
#            send errors, lagging sessions) read from its log
#
# Environment (all optional):
#   BENCH_NO_BUILD=1          use the binaries already in the target dir
#   ONAIR_BENCH_TARGET        cargo target dir (default ~/.cache/onair-bench-target)
#   BENCH_PORT_BASE           HTTP BASE, RTMP BASE+1, WebRTC UDP+TCP BASE+3 (default: first free of 41080, 41180, …)
#   BENCH_PIN=0               do not pin (default: engine on CPU 0, publisher/clients/Chromium on CPU 1)
#   BENCH_VIEWER_STEPS        default 0,10,25,50,100,200
#   BENCH_WARMUP, BENCH_MEASURE   seconds per viewers step (default 5 and 10)
#   BENCH_TTFF_RUNS           default 5
#   WHEPLOAD_DECRYPT=1        load clients also decrypt SRTP (costs them CPU)
#   ONAIR_WEBRTC_SHARDS=N     WebRTC shards (tasks) in the server (default: one per core)
#   ONAIR_WEBRTC_GSO=0        no UDP GSO (one sendto per packet)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${ONAIR_BENCH_TARGET:-$HOME/.cache/onair-bench-target}
OUT=$HERE/out
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/run-$STAMP
SUMMARY=$RUN/summary.txt
SOURCE=$OUT/source-1080p30-6M.flv
ONAIR=$TARGET/release/onair
WHEPLOAD=$TARGET/release/onair-whepload
CLK_TCK=$(getconf CLK_TCK)
STEPS=${BENCH_VIEWER_STEPS:-0,10,25,50,100,200}
WARMUP=${BENCH_WARMUP:-5}
MEASURE=${BENCH_MEASURE:-10}
TTFF_RUNS=${BENCH_TTFF_RUNS:-5}
GOP=60 # frames, at 30 fps: a keyframe every 2 s (live encode and the pre-encoded clip)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
udp_free() { ! ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; }
if [[ -n ${BENCH_PORT_BASE:-} ]]; then
  BASE=$BENCH_PORT_BASE
else
  for BASE in $(seq 41080 100 41980); do
    port_free "$BASE" && port_free $((BASE + 1)) && port_free $((BASE + 3)) && udp_free $((BASE + 3)) && break
  done
fi
HTTP_PORT=$BASE
RTMP_PORT=$((BASE + 1))
WEBRTC_PORT=$((BASE + 3))
ENGINE_URL="http://127.0.0.1:$HTTP_PORT"
export ONAIR_SIGNING_KEY=${ONAIR_SIGNING_KEY:-onair-bench-webrtc}
export ONAIR_LOG=${ONAIR_LOG:-warn,onair_webrtc::stats=debug}
export NO_COLOR=1
export ONAIR_WEBRTC_UDP=127.0.0.1:$WEBRTC_PORT ONAIR_WEBRTC_TCP=127.0.0.1:$WEBRTC_PORT
export ONAIR_PUBLIC_HOST=127.0.0.1
# The load clients are many viewers from one machine, ramping up fast: lift the WebRTC limits
# that would (rightly) refuse such a crowd in production.
export ONAIR_LIMITS_WEBRTC_SESSIONS=${ONAIR_LIMITS_WEBRTC_SESSIONS:-10000}
export ONAIR_LIMITS_WEBRTC_SESSIONS_PER_STREAM=${ONAIR_LIMITS_WEBRTC_SESSIONS_PER_STREAM:-10000}
export ONAIR_LIMITS_WEBRTC_CONNECTING=${ONAIR_LIMITS_WEBRTC_CONNECTING:-1000}

SERVER_CPUS=() CLIENT_CPUS=()
if [[ ${BENCH_PIN:-1} == 1 ]]; then SERVER_CPUS=(taskset -c 0) CLIENT_CPUS=(taskset -c 1); fi

PIDS=()
log() { printf '\033[1m[webrtc-bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
start() { # start NAME CMD… → $LAST_PID
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_all() { local i; for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done; PIDS=(); }
cleanup() { local code=$?; trap - EXIT INT TERM; stop_all; exit "$code"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

json_field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];process.stdout.write(v===undefined?"":typeof v==="object"?JSON.stringify(v):String(v))})' "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pct_of_core() { awk -v d="$1" -v hz="$CLK_TCK" -v s="$2" 'BEGIN { printf "%.1f", d / hz / s * 100 }'; }
wait_http() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "$1 did not answer within $2 s"
}
wait_live() {
  local i
  for ((i = 0; i < 300; i++)); do
    curl -fsS "$ENGINE_URL/api/streams/$1" 2>/dev/null | grep -q '"live":true' && return 0
    sleep 0.1
  done
  die "stream $1 did not go live within 30 s (see $RUN/*.log)"
}
publish_url() { "$ONAIR" obs "$1" --config "$RUN/onair.toml" --host "127.0.0.1:$RTMP_PORT" --json | json_field url; }

ENGINE_PID=
start_engine() {
  port_free "$HTTP_PORT" || die "port $HTTP_PORT is taken (set BENCH_PORT_BASE)"
  mkdir -p "$RUN/data"
  start engine "${SERVER_CPUS[@]}" "$ONAIR" serve --config "$RUN/onair.toml" --http "127.0.0.1:$HTTP_PORT" \
    --rtmp "127.0.0.1:$RTMP_PORT" --data-dir "$RUN/data"
  ENGINE_PID=$LAST_PID
  wait_http "$ENGINE_URL/healthz" 20
}

# A live 1080p30 source with the wall clock burnt in (bits of epoch ms mod 2^24 as 40-px squares),
# encoded like OBS would for low latency: x264 ultrafast, zerolatency, no B-frames, GOP 2 s, 6 Mb/s.
BLOCK=40
start_live_source() { # STREAM
  local url strip
  url=$(publish_url "$1")
  strip="if(lt(X/$BLOCK,24),if(mod(floor(T*1000/pow(2,floor(X/$BLOCK))),2),235,16),if(lt(X/$BLOCK,25),235,16))"
  start "publish-$1" "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning \
    -re -f lavfi -i "testsrc2=s=1920x1080:r=30" -re -f lavfi -i sine=f=440:r=48000 \
    -filter_complex "[0:v]settb=AVTB,setpts=RTCTIME,split[a][b];[b]crop=$((26 * BLOCK)):$BLOCK:0:0,format=gray,geq=lum='$strip'[s];[a][s]overlay=0:0,settb=1/30,setpts=N,format=yuv420p[v]" \
    -map '[v]' -map 1:a -c:v libx264 -preset ultrafast -tune zerolatency -b:v 6M -maxrate 6M -bufsize 6M \
    -g $GOP -bf 0 -c:a aac -b:a 128k -f flv "$url"
  SOURCE_PID=$LAST_PID
}

prepare() {
  for c in ffmpeg node curl cargo taskset; do command -v $c >/dev/null || die "$c is missing"; done
  [[ -x /usr/bin/chromium || -n ${ONAIR_CHROMIUM:-} ]] || die "chromium is missing"
  mkdir -p "$RUN"
  : >"$SUMMARY"
  echo "# empty: built-in defaults (bench/webrtc/run.sh)" >"$RUN/onair.toml"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building onair and onair-whepload (release, $TARGET)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p onair) >"$RUN/build.log" 2>&1 ||
      die "cargo build failed, see $RUN/build.log"
    CARGO_TARGET_DIR=$TARGET cargo build --release --manifest-path "$HERE/whepload/Cargo.toml" >>"$RUN/build.log" 2>&1 ||
      die "whepload build failed, see $RUN/build.log"
  fi
  [[ -x $ONAIR && -x $WHEPLOAD ]] || die "binaries missing in $TARGET/release"
  if [[ ! -s $SOURCE ]]; then
    log "encoding the 40 s 1080p30 6 Mb/s source clip once (x264 ultrafast, GOP 2 s, no B-frames, AAC)"
    ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i testsrc2=s=1920x1080:r=30 \
      -f lavfi -i sine=f=440:r=48000 -t 40 -c:v libx264 -preset ultrafast -tune zerolatency -b:v 6M \
      -maxrate 6M -bufsize 6M -g $GOP -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SOURCE.tmp" &&
      mv "$SOURCE.tmp" "$SOURCE"
  fi
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  [[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit+=" + uncommitted changes"
  say "OnAir WebRTC benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
  say "machine: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores, $(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo) MB RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r), $(/usr/bin/chromium --version 2>/dev/null | head -1)"
  say "pinning: $([[ ${BENCH_PIN:-1} == 1 ]] && echo 'engine on CPU 0; publisher, Chromium and load clients on CPU 1' || echo none)"
  say "WebRTC shards: ${ONAIR_WEBRTC_SHARDS:-one per core}; UDP GSO: $([[ ${ONAIR_WEBRTC_GSO:-1} == 0 ]] && echo off || echo on)"
  say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  say "raw results: $RUN"
}

step_latency() {
  log "latency: live 1080p30 encode with the clock burnt in → engine → WHEP → Chromium"
  start_engine
  start_live_source lat
  local enc=$SOURCE_PID
  wait_live lat
  sleep 2
  local e0 w0 r
  e0=$(cpu_ticks "$enc"); w0=$(date +%s.%N)
  "${CLIENT_CPUS[@]}" node "$HERE/webrtc.mjs" latency "$ENGINE_URL/lat?transport=webrtc" --block $BLOCK --duration 20 --warmup 4 \
    >"$RUN/latency.json" 2>"$RUN/latency.err" || true
  local enc_cpu
  enc_cpu=$(pct_of_core $(($(cpu_ticks "$enc") - e0)) "$(awk -v a="$w0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')")
  r=$(tail -n1 "$RUN/latency.json"); [[ -n $r ]] || r='{"ok":false,"reason":"no output"}'
  f() { echo "$r" | json_field "$1"; }
  say ""
  say "== latency: glass-to-glass, 1920x1080 30 fps live x264 ultrafast zerolatency -bf 0 -g $GOP 6 Mb/s, WHEP, headless Chromium (software decode), 20 s"
  if [[ $(f ok) == true ]]; then
    say "median $(f median_ms) ms, p95 $(f p95_ms) ms (min $(f min_ms), max $(f max_ms)); $(f samples) frames read ($(f unreadable_frames) unreadable), rVFC $(f rvfc)"
    say "getStats: RTT median $(f rtt_median_ms) ms (max $(f rtt_max_ms)), video jitter buffer $(f jitter_buffer_median_ms) ms, $(f video) $(f decoder), $(f frames_decoded) frames decoded, $(f frames_dropped) dropped, $(f packets_lost) packets lost of $(f packets_received), $(f video_mbps) Mb/s"
  else
    say "not measured: $(f reason)"
  fi
  say "live encoder: ${enc_cpu} % of a core"
  say "raw: $r"
  stop_all
}

step_ttff() {
  log "ttff: $TTFF_RUNS page loads of the WebRTC viewer page"
  start_engine
  start_live_source ttff
  wait_live ttff
  sleep 3
  "${CLIENT_CPUS[@]}" node "$HERE/webrtc.mjs" ttff "$ENGINE_URL/ttff?transport=webrtc" --runs "$TTFF_RUNS" \
    >"$RUN/ttff.json" 2>"$RUN/ttff.err" || true
  local r
  r=$(tail -n1 "$RUN/ttff.json"); [[ -n $r ]] || r='{"ok":false,"reason":"no output"}'
  f() { echo "$r" | json_field "$1"; }
  say ""
  say "== ttff: new viewer, time to the first decoded frame (live source as for latency, GOP $GOP frames = 2 s)"
  if [[ $(f ok) == true ]]; then
    say "navigation → first frame: median $(f nav_to_frame_median_ms) ms (min $(f nav_to_frame_min_ms), max $(f nav_to_frame_max_ms)); WHEP POST → first frame median $(f post_to_frame_median_ms) ms; POST → answer median $(f post_to_answer_median_ms) ms; $(f runs) runs"
  else
    say "not measured: $(f reason)"
  fi
  say "raw: $r"
  stop_all
}

step_viewers() {
  log "viewers: pre-encoded 1080p30 6 Mb/s looped, WHEP load clients at steps $STEPS"
  start_engine
  local url
  url=$(publish_url bench)
  start publish-bench "${CLIENT_CPUS[@]}" ffmpeg -hide_banner -nostdin -loglevel warning -re -stream_loop -1 -i "$SOURCE" -c copy -f flv "$url"
  wait_live bench
  sleep 6
  local kbps
  kbps=$(curl -fsS "$ENGINE_URL/api/streams/bench" | json_field bitrate_kbps)
  [[ -n $kbps && $kbps != 0 ]] || kbps=6000
  say ""
  say "== viewers: engine CPU/RSS per WebRTC viewer; stream 1080p30 at ${kbps} kb/s (engine's figure); ${WARMUP}+${MEASURE} s per step"
  say "   clients: onair-whepload (rtc 0.21.1 offerer, recvonly video+audio, own UDP socket each, SRTP $([[ ${WHEPLOAD_DECRYPT:-0} == 1 ]] && echo decrypted || echo 'counted, not decrypted'))"
  say "   ok = clients receiving >= 90 % of the stream's bitrate; cpu% of one core; per-viewer figures are above the 0-viewer step"
  say "   rcv_drop = UDP datagrams the kernel dropped at full client sockets (client too slow); eng_busy% = each WebRTC shard's busy time; kpkt/s, snd_err, lagged (media units a shard missed) = engine's own counters"
  local dec=()
  [[ ${WHEPLOAD_DECRYPT:-0} == 1 ]] && dec=(--decrypt)
  "${CLIENT_CPUS[@]}" "$WHEPLOAD" --url "$ENGINE_URL/live/bench/whep" --pid "$ENGINE_PID" --steps "$STEPS" \
    --warmup "$WARMUP" --measure "$MEASURE" --expect-kbps "$kbps" --stop-on-fail --engine-log "$RUN/engine.log" "${dec[@]}" \
    >"$RUN/viewers.jsonl" 2>"$RUN/viewers.txt" &
  local lp=$!
  PIDS+=("$lp")
  tail -n +1 -f "$RUN/viewers.txt" >&2 &
  local tp=$!
  PIDS+=("$tp")
  wait "$lp" || log "whepload exited with $?"
  sleep 0.2
  stop_pid "$tp"
  cat "$RUN/viewers.txt" >>"$SUMMARY"
  stop_all
}

main() {
  local what=${1:-all}
  case $what in
    all | latency | ttff | viewers) ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown step '$what' (all, latency, ttff, viewers)" ;;
  esac
  local t0=$SECONDS
  prepare
  case $what in
    all) step_latency; step_ttff; step_viewers ;;
    latency) step_latency ;;
    ttff) step_ttff ;;
    viewers) step_viewers ;;
  esac
  say ""
  say "total time: $((SECONDS - t0)) s; command: bench/webrtc/run.sh $what"
  cat "$SUMMARY" >&2
}

main "$@"
