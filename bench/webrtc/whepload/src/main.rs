//! WHEP load clients for the OnAir WebRTC benchmark (bench/webrtc/run.sh viewers).
//!
//!   onair-whepload --url http://127.0.0.1:P/live/STREAM/whep --pid ENGINE_PID
//!                  [--steps 0,10,25,50,100,200] [--warmup 5] [--measure 10]
//!                  [--expect-kbps 6000] [--decrypt] [--stop-on-fail] [--engine-log FILE]
//!
//! Each client is one `rtc` sans-IO peer (the offerer, recvonly video + audio) on its own UDP
//! socket on 127.0.0.1 (1 MiB receive buffer): it POSTs its offer, sets the answer, and runs the
//! ICE/DTLS loop. It does not decrypt or decode: once media flows, SRTP datagrams are counted
//! (bytes, packets, per-SSRC sequence numbers for losses: RTP headers are clear text) straight
//! from the socket and not handed to the peer (--decrypt hands them over, so the client also
//! pays SRTP decryption). STUN, DTLS and SRTCP still go to the peer, which keeps ICE consent
//! alive with its own checks and the DTLS session open.
//!
//! Besides the engine's CPU and RSS, each step reports the kernel's UDP receive-buffer drops
//! during the measurement (/proc/net/snmp `RcvbufErrors`: datagrams that reached a client socket
//! the client did not drain in time, i.e. losses the load client caused) and, with
//! --engine-log (the engine running with `ONAIR_LOG=…,onair_webrtc::stats=debug`), the engine's
//! own once-a-second figures over the measurement: time busy per engine task, packets sent,
//! send errors, samples skipped by lagging sessions.
//!
//! At each step the client count is raised to the step's value, the tool waits until they are
//! connected (or 20 s), then `--warmup` s, then measures for `--measure` s: the engine's CPU
//! (/proc/PID/stat utime+stime), its RSS (/proc/PID/status VmRSS), each client's received rate,
//! and losses. One human-readable line per step on stderr, one JSON line per step on stdout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const AUDIO_PT: u8 = 111;

#[derive(Default)]
struct Stats {
    /// 0 connecting, 1 connected, 2 failed
    state: AtomicU8,
    bytes: AtomicU64,
    packets: AtomicU64,
    video_bytes: AtomicU64,
    /// sum over SSRCs of (highest extended seq - first + 1)
    expected: AtomicU64,
    decrypted: AtomicU64,
    post_us: AtomicU64,
    connect_us: AtomicU64,
    first_video_us: AtomicU64,
}

struct Opts {
    url: String,
    pid: u32,
    steps: Vec<usize>,
    warmup: u64,
    measure: u64,
    expect_kbps: f64,
    decrypt: bool,
    stop_on_fail: bool,
    engine_log: Option<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        url: String::new(),
        pid: 0,
        steps: vec![0, 10, 25, 50, 100, 200],
        warmup: 5,
        measure: 10,
        expect_kbps: 6000.0,
        decrypt: false,
        stop_on_fail: false,
        engine_log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.url = v()?,
            "--pid" => o.pid = v()?.parse().map_err(|e| format!("--pid: {e}"))?,
            "--steps" => {
                o.steps = v()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--steps: {e}"))?
            }
            "--warmup" => o.warmup = v()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--measure" => o.measure = v()?.parse().map_err(|e| format!("--measure: {e}"))?,
            "--expect-kbps" => o.expect_kbps = v()?.parse().map_err(|e| format!("--expect-kbps: {e}"))?,
            "--decrypt" => o.decrypt = true,
            "--stop-on-fail" => o.stop_on_fail = true,
            "--engine-log" => o.engine_log = Some(v()?),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if o.url.is_empty() || o.pid == 0 {
        return Err("--url and --pid are required".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// HTTP: one POST over a plain TCP connection (loopback, no TLS)

async fn post_sdp(url: &str, sdp: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host).await.map_err(|e| format!("connect {host}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("bad HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "201" {
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    // Connection: close and no chunking expected from axum for a String body with a length.
    Ok(body.to_string())
}

// ---------------------------------------------------------------------------------------------
// One client

fn codec(mime: &str, clock: u32, ch: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: clock,
            channels: ch,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
        ..Default::default()
    }
}

#[derive(Default)]
struct SeqTrack {
    first: u64,
    max: u64,
    count: u64,
}

async fn client(url: String, stats: Arc<Stats>, decrypt: bool, t0: Instant) -> Result<(), String> {
    let e = |e: rtc::shared::error::Error| e.to_string();
    let socket = bind_udp().map_err(|e| e.to_string())?;
    let local_addr = socket.local_addr().map_err(|e| e.to_string())?;
    let mut me = MediaEngine::default();
    me.register_codec(codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", AUDIO_PT), RtpCodecKind::Audio)
        .map_err(e)?;
    // What Chromium offers (Constrained Baseline, Main, High): the engine picks the stream's.
    for (pt, pli) in [(102u8, "42e01f"), (104, "42001f"), (106, "4d001f"), (108, "640c1f"), (110, "64001f")] {
        me.register_codec(
            codec(
                MIME_TYPE_H264,
                90000,
                0,
                &format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={pli}"),
                pt,
            ),
            RtpCodecKind::Video,
        )
        .map_err(e)?;
    }
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(Registry::new())
        .build(Instant::now())
        .map_err(e)?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
        )
        .map_err(e)?;
    }
    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local_addr.ip().to_string(),
            port: local_addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(e)?;
    pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().map_err(e)?).map_err(e)?;
    let offer = pc.create_offer(None).map_err(e)?;
    pc.set_local_description(Instant::now(), offer).map_err(e)?;
    let sdp = pc.local_description().ok_or("no local description")?.sdp;
    let answer = post_sdp(&url, &sdp).await?;
    stats.post_us.store(t0.elapsed().as_micros() as u64, Relaxed);
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).map_err(e)?).map_err(e)?;

    let mut seqs: HashMap<u32, SeqTrack> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let far = Instant::now() + Duration::from_secs(86400);
    let timer = tokio::time::sleep_until(far.into());
    tokio::pin!(timer);
    let mut deadline = far;

    // Counts one SRTP datagram (headers are clear text).
    let mut count = |d: &[u8], stats: &Stats| {
        stats.bytes.fetch_add(d.len() as u64, Relaxed);
        stats.packets.fetch_add(1, Relaxed);
        if d.len() < 12 {
            return;
        }
        if d[1] & 0x7f != AUDIO_PT {
            stats.video_bytes.fetch_add(d.len() as u64, Relaxed);
            if stats.first_video_us.load(Relaxed) == 0 {
                stats.first_video_us.store(t0.elapsed().as_micros() as u64, Relaxed);
            }
        }
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        let seq = u16::from_be_bytes([d[2], d[3]]) as u64;
        let t = seqs.entry(ssrc).or_default();
        if t.count == 0 {
            t.first = seq + (1 << 20);
            t.max = t.first;
        } else {
            // extend around the highest seen
            let base = t.max & !0xffff;
            let mut ext = base | seq;
            if ext + 0x8000 < t.max {
                ext += 0x10000;
            } else if ext > t.max + 0x8000 && ext >= 0x10000 {
                ext -= 0x10000;
            }
            let before = t.max - t.first + 1;
            if ext > t.max {
                t.max = ext;
            }
            let after = t.max - t.first + 1;
            stats.expected.fetch_add(after - before, Relaxed);
            t.count += 1;
            return;
        }
        t.count = 1;
        stats.expected.fetch_add(1, Relaxed);
    };

    loop {
        while let Some(msg) = pc.poll_write() {
            let _ = socket.send_to(&msg.message, msg.transport.peer_addr).await;
        }
        while let Some(ev) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected => {
                        stats.connect_us.store(t0.elapsed().as_micros() as u64, Relaxed);
                        stats.state.store(1, Relaxed);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        stats.state.store(2, Relaxed);
                        return Err(format!("peer {s}"));
                    }
                    _ => {}
                }
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = pc.poll_read() {
            if let RTCMessage::RtpPacket(..) = message {
                stats.decrypted.fetch_add(1, Relaxed);
            }
        }
        let next = pc.poll_timeout().unwrap_or(far);
        if next <= Instant::now() {
            let _ = pc.handle_timeout(Instant::now());
            continue;
        }
        if next != deadline {
            deadline = next;
            timer.as_mut().reset(next.into());
        }
        tokio::select! {
            _ = timer.as_mut() => {
                let _ = pc.handle_timeout(Instant::now());
            }
            r = socket.recv_from(&mut buf) => {
                let (mut n, mut from): (usize, SocketAddr) = r.map_err(|e| e.to_string())?;
                loop {
                    let d = &buf[..n];
                    // RFC 7983: 128..=191 is RTP/RTCP; RTCP packet types 192..=223 in byte 1.
                    let rtp = d.len() >= 2 && (128..=191).contains(&d[0]) && !(192..=223).contains(&d[1]);
                    if rtp {
                        count(d, &stats);
                    }
                    if !rtp || decrypt {
                        let _ = pc.handle_read(TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: BytesMut::from(d),
                        });
                        if !rtp || decrypt { break; }
                    }
                    match socket.try_recv_from(&mut buf) {
                        Ok((m, f)) => { n = m; from = f; }
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// 127.0.0.1, any port, 1 MiB receive buffer (a 1080p keyframe arrives in one burst).
fn bind_udp() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    UdpSocket::from_std(s.into())
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// UDP `RcvbufErrors` of /proc/net/snmp: datagrams dropped because a receiving socket's buffer
/// was full (machine-wide).
fn udp_rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(head), Some(vals)) = (udp.next(), udp.next()) else { return 0 };
    head.split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn file_len(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The engine's stats lines written to `path` after byte `from`, summed up.
#[derive(Default, Debug)]
struct EngineLog {
    /// Mean busy % of each engine task.
    busy: Vec<f64>,
    /// Mean packets/s and sends/s, all engines together.
    pkts: f64,
    calls: f64,
    send_errors: u64,
    send_blocked: u64,
    lagged: u64,
    lines: usize,
}

fn engine_log(path: &str, from: u64) -> EngineLog {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    // "shard 0: 100 sessions, busy 48 %, sent 31000 pkt/s 300.1 Mb/s in 4000 calls/s, rtp in …,
    //  send errors 0, send blocked 0, tcp dropped 0, media dropped 0, net dropped 0, unrouted 0"
    // (before the server was split into shards: "engine 0: …, lagged samples 0, unrouted 0")
    let num = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let mut busy: Vec<(f64, usize)> = Vec::new();
    let mut per_engine_lines = Vec::<usize>::new();
    let mut out = EngineLog::default();
    for line in text.lines().filter(|l| l.contains("onair_webrtc::stats")) {
        let Some(engine) = num(line, "shard ").or_else(|| num(line, "engine ")).map(|e| e as usize) else { continue };
        if busy.len() <= engine {
            busy.resize(engine + 1, (0.0, 0));
            per_engine_lines.resize(engine + 1, 0);
        }
        busy[engine].0 += num(line, "busy ").unwrap_or(0.0);
        busy[engine].1 += 1;
        per_engine_lines[engine] += 1;
        out.pkts += num(line, "sent ").unwrap_or(0.0);
        out.calls += num(line, "Mb/s in ").unwrap_or(0.0);
        out.send_errors += num(line, "send errors ").unwrap_or(0.0) as u64;
        out.send_blocked += num(line, "send blocked ").unwrap_or(0.0) as u64;
        out.lagged += num(line, "media dropped ").or_else(|| num(line, "lagged samples ")).unwrap_or(0.0) as u64;
        out.lines += 1;
    }
    let seconds = per_engine_lines.iter().copied().max().unwrap_or(0).max(1) as f64;
    out.pkts /= seconds;
    out.calls /= seconds;
    out.busy = busy.iter().map(|(sum, n)| if *n > 0 { sum / *n as f64 } else { 0.0 }).collect();
    out
}

fn proc_ticks(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" of comm: state is field 3; utime 14, stime 15
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let g = |i: usize| f.get(i - 3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    g(14) + g(15)
}

fn proc_status_kb(pid: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("onair-whepload: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::env::var("WHEPLOAD_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(opts));
}

async fn run(o: Opts) {
    let hz = clk_tck();
    let pid = o.pid.to_string();
    let t0 = Instant::now();
    let mut clients: Vec<Arc<Stats>> = Vec::new();
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    eprintln!(
        "{:>7} {:>9} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>8} {:>7} {:>9} {:>8} {:>9} {:>11} {:>8} {:>8} {:>8}",
        "viewers",
        "connected",
        "eng_cpu%",
        "cpu%/vwr",
        "rss_MB",
        "MB/vwr",
        "min_Mb/s",
        "med_Mb/s",
        "ok(>=90%)",
        "loss%",
        "setup_ms",
        "load_cpu%",
        "rcv_drop",
        "eng_busy%",
        "kpkt/s",
        "snd_err",
        "lagged"
    );
    let base_rss = proc_status_kb(&pid, "VmRSS:") as f64 / 1024.0;
    let mut base_cpu: Option<f64> = None;
    for &target in &o.steps {
        let step_start = Instant::now();
        while clients.len() < target {
            let st = Arc::new(Stats::default());
            clients.push(st.clone());
            let (url, errs, dec) = (o.url.clone(), errors.clone(), o.decrypt);
            let started = Instant::now();
            tokio::spawn(async move {
                if let Err(e) = client(url, st.clone(), dec, started).await {
                    st.state.store(2, Relaxed);
                    errs.lock().unwrap().push(e);
                }
            });
            // a gentle ramp: 100 new peers a second
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // wait for them to connect (20 s at most)
        let wait_end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < wait_end && clients.iter().any(|c| c.state.load(Relaxed) == 0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let connected = clients.iter().filter(|c| c.state.load(Relaxed) == 1).count();
        let setup: Vec<f64> = {
            let mut v: Vec<f64> = clients
                .iter()
                .filter(|c| c.connect_us.load(Relaxed) > 0)
                .map(|c| c.connect_us.load(Relaxed) as f64 / 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        tokio::time::sleep(Duration::from_secs(o.warmup)).await;
        let snap = |cs: &[Arc<Stats>]| -> Vec<(u64, u64, u64)> {
            cs.iter().map(|c| (c.bytes.load(Relaxed), c.packets.load(Relaxed), c.expected.load(Relaxed))).collect()
        };
        let e0 = proc_ticks(&pid);
        let l0 = proc_ticks("self");
        let d0 = udp_rcvbuf_errors();
        let log0 = o.engine_log.as_deref().map(file_len).unwrap_or(0);
        let s0 = snap(&clients);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.measure)).await;
        let e1 = proc_ticks(&pid);
        let l1 = proc_ticks("self");
        let rcv_drop = udp_rcvbuf_errors().saturating_sub(d0);
        let elog = o.engine_log.as_deref().map(|p| engine_log(p, log0)).unwrap_or_default();
        let busy = if elog.busy.is_empty() {
            "-".to_string()
        } else {
            elog.busy.iter().map(|b| format!("{b:.0}")).collect::<Vec<_>>().join("/")
        };
        let s1 = snap(&clients);
        let secs = w0.elapsed().as_secs_f64();
        let cpu = (e1 - e0) as f64 / hz / secs * 100.0;
        let load_cpu = (l1 - l0) as f64 / hz / secs * 100.0;
        let rss = proc_status_kb(&pid, "VmRSS:") as f64 / 1024.0;
        let hwm = proc_status_kb(&pid, "VmHWM:") as f64 / 1024.0;
        let mut rates: Vec<f64> = s0.iter().zip(&s1).map(|(a, b)| (b.0 - a.0) as f64 * 8.0 / secs / 1e6).collect();
        let (mut got, mut exp) = (0u64, 0u64);
        let mut worst_loss: f64 = 0.0;
        for (a, b) in s0.iter().zip(&s1) {
            let (g, x) = (b.1 - a.1, b.2 - a.2);
            got += g;
            exp += x;
            if x > 0 {
                worst_loss = worst_loss.max(x.saturating_sub(g) as f64 / x as f64 * 100.0);
            }
        }
        let loss = if exp > 0 { exp.saturating_sub(got) as f64 / exp as f64 * 100.0 } else { 0.0 };
        rates.sort_by(f64::total_cmp);
        let ok = rates.iter().filter(|r| **r * 1000.0 >= o.expect_kbps * 0.9).count();
        let base = *base_cpu.get_or_insert(cpu);
        let per_cpu = if target > 0 { (cpu - base) / target as f64 } else { 0.0 };
        let per_mb = if target > 0 { (rss - base_rss) / target as f64 } else { 0.0 };
        let mean = if rates.is_empty() { 0.0 } else { rates.iter().sum::<f64>() / rates.len() as f64 };
        eprintln!(
            "{:>7} {:>9} {:>8.1} {:>8.3} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>8} {:>7.2} {:>9.0} {:>8.1} {:>9} {:>11} {:>8.1} {:>8} {:>8}",
            target,
            connected,
            cpu,
            per_cpu,
            rss,
            per_mb,
            pct(&rates, 0.0),
            pct(&rates, 0.5),
            format!("{ok}/{target}"),
            loss,
            pct(&setup, 0.5),
            load_cpu,
            rcv_drop,
            busy,
            elog.pkts / 1000.0,
            elog.send_errors,
            elog.lagged
        );
        let errs: Vec<String> = errors.lock().unwrap().iter().take(3).cloned().collect();
        println!(
            "{{\"viewers\":{target},\"connected\":{connected},\"engine_cpu_pct\":{cpu:.2},\"engine_cpu_pct_per_viewer_above_base\":{per_cpu:.4},\"engine_rss_mb\":{rss:.1},\"engine_hwm_mb\":{hwm:.1},\"engine_rss_mb_before_viewers\":{base_rss:.1},\"rss_mb_per_viewer\":{per_mb:.3},\"rate_mbps_min\":{:.3},\"rate_mbps_p5\":{:.3},\"rate_mbps_median\":{:.3},\"rate_mbps_mean\":{mean:.3},\"rate_mbps_max\":{:.3},\"total_mbps\":{:.1},\"clients_at_90pct\":{ok},\"loss_pct\":{loss:.3},\"worst_client_loss_pct\":{worst_loss:.3},\"connect_ms_median\":{:.0},\"connect_ms_p95\":{:.0},\"loadgen_cpu_pct\":{load_cpu:.1},\"udp_rcvbuf_drops\":{rcv_drop},\"engine_busy_pct\":{:?},\"engine_pkts_per_s\":{:.0},\"engine_send_calls_per_s\":{:.0},\"engine_send_errors\":{},\"engine_send_blocked\":{},\"engine_lagged_samples\":{},\"engine_stats_lines\":{},\"measure_s\":{secs:.1},\"step_s\":{:.1},\"errors\":{:?}}}",
            pct(&rates, 0.0),
            pct(&rates, 0.05),
            pct(&rates, 0.5),
            pct(&rates, 1.0),
            rates.iter().sum::<f64>(),
            pct(&setup, 0.5),
            pct(&setup, 0.95),
            elog.busy,
            elog.pkts,
            elog.calls,
            elog.send_errors,
            elog.send_blocked,
            elog.lagged,
            elog.lines,
            step_start.elapsed().as_secs_f64(),
            errs
        );
        if o.stop_on_fail && target > 0 && ok * 10 < target * 9 {
            eprintln!("fewer than 90 % of the clients keep up at {target}: stopping the ramp");
            break;
        }
    }
    let _ = t0;
    std::process::exit(0);
}
