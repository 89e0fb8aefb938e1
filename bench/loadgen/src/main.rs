//! `onair-loadgen`: the load side of the OnAir benchmark (see `bench/README.md`).
//!
//! ```text
//! onair-loadgen load   --url http://127.0.0.1:PORT/live/bench/llhls.m3u8 --mode blocking|poll
//!                      [--monitor URL] [--steps 400,1000,2000] [--bisect 3] [--warmup 3] [--measure 8]
//!                      [--stagger 2] [--retries 1] [--same-agent 1] [--cpu-pids 1,2] [--label NAME]
//! onair-loadgen load   --targets "LABEL,MODE,URL[,PID+PID] …" [the options above]
//! onair-loadgen mirror --url http://127.0.0.1:PORT/live/bench/llhls.m3u8 --root DIR
//! onair-loadgen fanout --targets "LABEL,URL,PID[+PID] …" [--clients 50] [--seconds 10] [--rounds 3]
//! ```
//!
//! `load` runs N simulated LL-HLS players, each on its own keep-alive connection, the way hls.js
//! does it in low-latency mode: the playlist once, `init.mp4` once, the last parts of the playlist
//! (PART-HOLD-BACK worth), then forever: the playlist with `_HLS_msn`/`_HLS_part` of the next part
//! (`--mode blocking`, the server holds it until that part exists) or the plain playlist every part
//! target (`--mode poll`, for servers that cannot block, e.g. nginx serving files), then every new
//! part, one after the other. Each player also plays its buffer in real time (a model, no
//! decoding), so it knows when it would have stalled. The player count is ramped step by step;
//! each step reports whether the players kept up, throughput, request times, how late parts
//! arrived, and the server's CPU. One JSON object per step goes to stdout, a table to stderr.
//!
//! `mirror` copies the live stream of an OnAir server to disk, byte for byte (parts, complete
//! segments, init, the LL-HLS playlist; media before the playlist that names them, renames so
//! readers never see a partial file), for a static web server to serve the same bytes.
//!
//! `fanout` measures what serving costs: `--clients` keep-alive clients per server each fetch the
//! newest complete segment of the playlist at URL, again and again as fast as they can, for
//! `--seconds`; the servers take turns, `--rounds` times. It reports the bytes served and the
//! servers' CPU time (utime + stime of the PIDs from `/proc`): CPU-seconds per GiB, and each
//! server's figure against the last target's (the reference, e.g. nginx).

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Longer than the server's 10 s hold of a blocking request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args(HashMap<String, String>);

impl Args {
    fn parse(list: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = list.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else { return Err(format!("unexpected argument {a:?}").into()) };
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), value.clone());
        }
        Ok(Self(map))
    }
    fn str(&self, key: &str) -> Result<String> {
        self.0.get(key).cloned().ok_or_else(|| format!("--{key} is required").into())
    }
    fn opt(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: {v:?} is not a number").into()),
        }
    }
}

/// `http://host:port/path` → (socket address, authority, path).
fn split_url(url: &str) -> Result<(SocketAddr, String, String)> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority.to_socket_addrs()?.next().ok_or("cannot resolve host")?;
    Ok((addr, authority.to_owned(), if path.is_empty() { "/".into() } else { path.into() }))
}

/// The directory part of a path, with its trailing slash: `/live/s/llhls.m3u8` → `/live/s/`.
fn dir_of(path: &str) -> &str {
    &path[..path.rfind('/').map_or(0, |i| i + 1)]
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client: one keep-alive connection, reopened when the server closes it

struct Client {
    addr: SocketAddr,
    authority: String,
    user_agent: String,
    tx: Option<SendRequest<Empty<Bytes>>>,
}

struct Response {
    status: StatusCode,
    body: Bytes,
    len: usize,
}

impl Client {
    fn new(addr: SocketAddr, authority: &str, user_agent: String) -> Self {
        Self { addr, authority: authority.to_owned(), user_agent, tx: None }
    }

    async fn connect(&mut self) -> Result<()> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.tx = Some(tx);
        Ok(())
    }

    /// GET `path`; keeps the body when `keep`, otherwise only counts it.
    async fn get(&mut self, path: &str, keep: bool) -> Result<Response> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.get_inner(path, keep)).await {
            Ok(r) => r,
            Err(_) => {
                self.tx = None;
                Err(format!("GET {path}: no answer in {REQUEST_TIMEOUT:?}").into())
            }
        }
    }

    async fn get_inner(&mut self, path: &str, keep: bool) -> Result<Response> {
        // A reused connection may have been closed by the server meanwhile (keep-alive limit,
        // idle timeout): then retry once on a fresh one.
        for attempt in 0..2 {
            let reused = self.tx.as_ref().is_some_and(|t| !t.is_closed());
            if !reused {
                self.connect().await?;
            }
            let tx = self.tx.as_mut().expect("connected");
            if tx.ready().await.is_err() {
                self.tx = None;
                continue;
            }
            let req = Request::get(path)
                .header(header::HOST, &self.authority)
                .header(header::USER_AGENT, &self.user_agent)
                .body(Empty::new())?;
            let res = match tx.send_request(req).await {
                Ok(res) => res,
                Err(e) => {
                    self.tx = None;
                    if reused && attempt == 0 {
                        continue;
                    }
                    return Err(format!("GET {path}: {e}").into());
                }
            };
            let status = res.status();
            let mut body = res.into_body();
            let mut buf = BytesMut::new();
            let mut len = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    self.tx = None;
                    format!("GET {path}: body: {e}")
                })?;
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    if keep {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            return Ok(Response { status, body: buf.freeze(), len });
        }
        Err(format!("GET {path}: connection closed twice").into())
    }
}

// ---------------------------------------------------------------------------------------------
// LL-HLS media playlists (the subset OnAir writes)

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Pos {
    msn: u64,
    part: u32,
}

#[derive(Clone, Debug)]
struct PartRef {
    pos: Pos,
    uri: String,
    duration: f64,
}

#[derive(Debug, Default)]
struct Playlist {
    map: Option<String>,
    parts: Vec<PartRef>,
    /// The newest segment with an `EXTINF` (complete).
    last_complete: Option<u64>,
    part_target: f64,
    part_hold_back: f64,
    ended: bool,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(i) = line[from..].find(&key) {
        let start = from + i;
        let before = line[..start].chars().last();
        if matches!(before, Some(':' | ',')) {
            let v = &line[start + key.len()..];
            return Some(if let Some(q) = v.strip_prefix('"') {
                &q[..q.find('"').unwrap_or(q.len())]
            } else {
                &v[..v.find(',').unwrap_or(v.len())]
            });
        }
        from = start + key.len();
    }
    None
}

impl Playlist {
    fn parse(text: &str) -> Option<Self> {
        if !text.starts_with("#EXTM3U") {
            return None;
        }
        let mut pl = Playlist { part_target: 0.334, part_hold_back: 1.0, ..Default::default() };
        let mut msn = 0u64;
        let mut part = 0u32;
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                msn = v.parse().ok()?;
            } else if line.starts_with("#EXT-X-MAP:") {
                pl.map = attr(line, "URI").map(str::to_owned);
            } else if line.starts_with("#EXT-X-PART-INF:") {
                pl.part_target = attr(line, "PART-TARGET")?.parse().ok()?;
            } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
                if let Some(v) = attr(line, "PART-HOLD-BACK") {
                    pl.part_hold_back = v.parse().ok()?;
                }
            } else if line.starts_with("#EXT-X-PART:") {
                let uri = attr(line, "URI")?.to_owned();
                let duration = attr(line, "DURATION")?.parse().ok()?;
                pl.parts.push(PartRef { pos: Pos { msn, part }, uri, duration });
                part += 1;
            } else if line == "#EXT-X-ENDLIST" {
                pl.ended = true;
            } else if !line.is_empty() && !line.starts_with('#') {
                pl.last_complete = Some(msn);
                msn += 1;
                part = 0;
            }
        }
        Some(pl)
    }

    /// The publish session: the directory of the init segment's URI.
    fn session(&self) -> Option<&str> {
        self.map.as_deref().map(|m| &m[..m.rfind('/').unwrap_or(0)])
    }

    /// The part a client asks for next after `last` (`_HLS_msn`/`_HLS_part`).
    fn next_after(&self, last: Pos) -> Pos {
        if self.last_complete.is_some_and(|c| c >= last.msn) {
            Pos { msn: last.msn + 1, part: 0 }
        } else {
            Pos { msn: last.msn, part: last.part + 1 }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Millisecond histogram (0..=HIST_MAX ms, the last bucket holds everything above).
struct Hist(Vec<AtomicU32>);
const HIST_MAX: usize = 20_000;

impl Hist {
    fn new() -> Self {
        Self((0..=HIST_MAX).map(|_| AtomicU32::new(0)).collect())
    }
    fn record(&self, d: Duration) {
        let ms = (d.as_micros() as usize).div_ceil(1000).min(HIST_MAX);
        self.0[ms].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Vec<u32> {
        self.0.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    }
}

/// Percentiles (ms) of the difference between two snapshots.
fn percentiles(a: &[u32], b: &[u32], qs: &[f64]) -> (u64, Vec<Option<usize>>) {
    let diff: Vec<u64> = a.iter().zip(b).map(|(x, y)| u64::from(y.wrapping_sub(*x))).collect();
    let total: u64 = diff.iter().sum();
    let out = qs
        .iter()
        .map(|q| {
            if total == 0 {
                return None;
            }
            let want = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut acc = 0;
            for (ms, n) in diff.iter().enumerate() {
                acc += n;
                if acc >= want {
                    return Some(ms);
                }
            }
            Some(HIST_MAX)
        })
        .collect();
    (total, out)
}

/// A player's buffer played in real time: how long it would have stalled.
#[derive(Default, Clone)]
struct Playback {
    started: bool,
    /// Media seconds downloaded and played.
    buffered: f64,
    played: f64,
    last: Option<Instant>,
    stall_s: f64,
    stalls: u64,
}

impl Playback {
    fn advance(&mut self, now: Instant) {
        if !self.started {
            return;
        }
        let elapsed = self.last.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let ahead = self.buffered - self.played;
        if elapsed > ahead {
            if ahead > 0.0 || self.stall_s == 0.0 {
                self.stalls += 1;
            }
            self.stall_s += elapsed - ahead.max(0.0);
            self.played = self.buffered;
        } else {
            self.played += elapsed;
        }
        self.last = Some(now);
    }
    fn add(&mut self, now: Instant, duration: f64) {
        self.advance(now);
        self.buffered += duration;
    }
    fn start(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            self.last = Some(now);
        }
    }
    /// Stall time including the stall in progress at `now`.
    fn stall_at(&self, now: Instant) -> f64 {
        let mut p = self.clone();
        p.advance(now);
        p.stall_s
    }
}

#[derive(Default, Clone)]
struct PlayerCounters {
    parts: u64,
    bytes: u64,
    errors: u64,
    resyncs: u64,
    requests: u64,
    play: Playback,
    last_error: Option<String>,
}

/// What the players of one target share.
struct Shared {
    cfg: Config,
    part_ms: Hist,
    delay_ms: Hist,
    monitor: Arc<Monitor>,
}

/// The origin's live edge as one blocking client sees it.
#[derive(Default)]
struct Monitor {
    /// When each part first appeared in the origin's playlist.
    seen: Mutex<HashMap<Pos, Instant>>,
    /// Parts that appeared since the monitor started.
    produced: AtomicU64,
}

#[derive(Clone)]
struct Config {
    addr: SocketAddr,
    authority: String,
    playlist: String,
    blocking: bool,
    /// All players send the same User-Agent (so the server sees them as one viewer).
    same_agent: bool,
}

// ---------------------------------------------------------------------------------------------
// A player

async fn player(shared: Arc<Shared>, me: Arc<Mutex<PlayerCounters>>, id: usize, delay: Duration) {
    tokio::time::sleep(delay).await;
    let cfg = &shared.cfg;
    let base = dir_of(&cfg.playlist).to_owned();
    // Every player its own User-Agent: to the server they are distinct viewers, as in real life
    // (they all come from 127.0.0.1), unless --same-agent 1.
    let agent = if cfg.same_agent { "onair-loadgen player".to_owned() } else { format!("onair-loadgen player {id}") };
    let mut client = Client::new(cfg.addr, &cfg.authority, agent);
    let mut session: Option<String> = None;
    let mut last: Option<Pos> = None;
    // The part to ask for next (`_HLS_msn`/`_HLS_part`), from the playlist that held `last`.
    let mut want: Option<Pos> = None;
    let mut next_poll = Instant::now();
    let fail = |me: &Mutex<PlayerCounters>, e: String| {
        let mut c = me.lock().unwrap();
        c.errors += 1;
        c.last_error = Some(e);
    };
    loop {
        // 1. The playlist: blocking for the next part, or polled every part target.
        let path = match (cfg.blocking, want) {
            (true, Some(w)) => format!("{}?_HLS_msn={}&_HLS_part={}", cfg.playlist, w.msn, w.part),
            _ => {
                if !cfg.blocking {
                    tokio::time::sleep_until(next_poll.into()).await;
                }
                cfg.playlist.clone()
            }
        };
        let t0 = Instant::now();
        let res = client.get(&path, true).await;
        me.lock().unwrap().requests += 1;
        let pl = match res {
            Ok(r) if r.status == StatusCode::OK => match Playlist::parse(&String::from_utf8_lossy(&r.body)) {
                Some(pl) => pl,
                None => {
                    fail(&me, format!("GET {path}: unreadable playlist"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            Ok(r) => {
                fail(&me, format!("GET {path}: HTTP {}", r.status));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                fail(&me, e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !cfg.blocking {
            next_poll = t0 + Duration::from_secs_f64(pl.part_target);
        }
        if pl.ended || pl.parts.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }

        // 2. A new publish session (or the first): init segment, then start PART-HOLD-BACK
        //    behind the live edge, like hls.js in low-latency mode.
        let sess = pl.session().unwrap_or_default().to_owned();
        if session.as_deref() != Some(sess.as_str()) {
            let Some(map) = pl.map.clone() else { continue };
            let p = format!("{base}{map}");
            match client.get(&p, false).await {
                Ok(r) if r.status == StatusCode::OK => {
                    let mut c = me.lock().unwrap();
                    c.bytes += r.len as u64;
                    c.requests += 1;
                }
                Ok(r) => {
                    fail(&me, format!("GET {p}: HTTP {}", r.status));
                    continue;
                }
                Err(e) => {
                    fail(&me, e.to_string());
                    continue;
                }
            }
            session = Some(sess);
            last = None;
        }
        let first = pl.parts[0].pos;
        if last.is_some_and(|l| l < first) {
            // Fell out of the playlist: jump back to the live edge.
            me.lock().unwrap().resyncs += 1;
            last = None;
        }
        let start = match last {
            Some(l) => pl.parts.iter().position(|p| p.pos > l).unwrap_or(pl.parts.len()),
            None => {
                let hold = (pl.part_hold_back / pl.part_target).round().max(1.0) as usize;
                pl.parts.len().saturating_sub(hold)
            }
        };
        let starting = last.is_none();

        // 3. Every new part, in order.
        let mut failed = false;
        for part in &pl.parts[start..] {
            let p = format!("{base}{}", part.uri);
            let t = Instant::now();
            match client.get(&p, false).await {
                Ok(r) if r.status == StatusCode::OK => {
                    let done = Instant::now();
                    shared.part_ms.record(done - t);
                    if let Some(seen) = shared.monitor.seen.lock().unwrap().get(&part.pos) {
                        shared.delay_ms.record(done.saturating_duration_since(*seen));
                    }
                    let mut c = me.lock().unwrap();
                    c.parts += 1;
                    c.requests += 1;
                    c.bytes += r.len as u64;
                    c.play.add(done, part.duration);
                    last = Some(part.pos);
                }
                Ok(r) => {
                    fail(&me, format!("GET {p}: HTTP {}", r.status));
                    failed = true;
                    break;
                }
                Err(e) => {
                    fail(&me, e.to_string());
                    failed = true;
                    break;
                }
            }
        }
        if starting && last.is_some() {
            me.lock().unwrap().play.start(Instant::now());
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        want = last.map(|l| pl.next_after(l));
    }
}

// ---------------------------------------------------------------------------------------------
// The monitor: one blocking client on the origin that notes when each part appears

async fn monitor(m: Arc<Monitor>, url: String) {
    let Ok((addr, authority, path)) = split_url(&url) else { return };
    let mut client = Client::new(addr, &authority, "onair-loadgen monitor".into());
    let mut want: Option<Pos> = None;
    let mut known: Option<Pos> = None;
    let mut session = String::new();
    loop {
        let p = match want {
            Some(w) => format!("{path}?_HLS_msn={}&_HLS_part={}", w.msn, w.part),
            None => path.clone(),
        };
        let pl = match client.get(&p, true).await {
            Ok(r) if r.status == StatusCode::OK => Playlist::parse(&String::from_utf8_lossy(&r.body)),
            _ => None,
        };
        let now = Instant::now();
        let Some(pl) = pl.filter(|pl| !pl.parts.is_empty()) else {
            want = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut seen = m.seen.lock().unwrap();
        if pl.session() != Some(session.as_str()) {
            // A new publish session numbers its parts from 0 again.
            session = pl.session().unwrap_or_default().to_owned();
            seen.clear();
            known = None;
        }
        for part in &pl.parts {
            if known.is_none_or(|k| part.pos > k) {
                seen.insert(part.pos, now);
                if known.is_some() {
                    m.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        seen.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        drop(seen);
        let newest = pl.parts.last().expect("non-empty").pos;
        known = Some(newest);
        want = Some(pl.next_after(newest));
    }
}

// ---------------------------------------------------------------------------------------------
// CPU of other processes (and our own), from /proc

/// utime + stime in clock ticks (USER_HZ, 100 on Linux) of the given pids, and RSS (kB).
fn proc_usage(pids: &[String]) -> (u64, u64) {
    let mut ticks = 0;
    let mut rss = 0;
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest[0] is field 3 (state); utime is field 14, stime 15.
            ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmRSS:") {
                    rss += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (ticks, rss)
}

/// Busy clock ticks of the whole machine, all cores (`/proc/stat`).
fn machine_busy() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0 };
    let Some(line) = stat.lines().next() else { return 0 };
    // cpu user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum()
}

// ---------------------------------------------------------------------------------------------
// load: ramp the number of players

struct Snapshot {
    at: Instant,
    players: Vec<PlayerCounters>,
    part_ms: Vec<u32>,
    delay_ms: Vec<u32>,
    produced: u64,
    server_ticks: u64,
    own_ticks: u64,
    machine_ticks: u64,
}

type Players = Vec<(Arc<Mutex<PlayerCounters>>, JoinHandle<()>)>;

fn snapshot(shared: &Shared, players: &Players, pids: &[String]) -> Snapshot {
    let at = Instant::now();
    let players = players
        .iter()
        .map(|(c, _)| {
            let mut c = c.lock().unwrap().clone();
            c.play.stall_s = c.play.stall_at(at);
            c
        })
        .collect();
    Snapshot {
        at,
        players,
        part_ms: shared.part_ms.snapshot(),
        delay_ms: shared.delay_ms.snapshot(),
        produced: shared.monitor.produced.load(Ordering::Relaxed),
        server_ticks: proc_usage(pids).0,
        own_ticks: proc_usage(&["self".to_owned()]).0,
        machine_ticks: machine_busy(),
    }
}

fn opt_ms(v: Option<usize>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

/// One server under test, and where its ramp stands.
struct Target {
    label: String,
    shared: Arc<Shared>,
    pids: Vec<String>,
    queue: VecDeque<usize>,
    bisect_left: u32,
    best: Option<(usize, f64)>,
    worst: Option<usize>,
    /// A failed count is tried once more before it counts as failed (another process may have
    /// taken the CPU for a moment): the count being retried.
    retrying: Option<usize>,
    /// Server CPU (% of a core) and Gbit/s summed over the passing steps.
    cpu_sum: f64,
    gbit_sum: f64,
}

/// `LABEL,MODE,URL[,PID+PID…]`.
fn parse_target(spec: &str, monitor: &Arc<Monitor>, steps: &[usize], bisect: u32, same_agent: bool) -> Result<Target> {
    let f: Vec<&str> = spec.split(',').collect();
    let (label, mode, url) = match f.as_slice() {
        [l, m, u] | [l, m, u, _] => (*l, *m, *u),
        _ => return Err(format!("--targets: {spec:?} is not LABEL,MODE,URL[,PID+PID]").into()),
    };
    let blocking = match mode {
        "blocking" => true,
        "poll" => false,
        m => return Err(format!("mode {m:?}: blocking or poll").into()),
    };
    let (addr, authority, playlist) = split_url(url)?;
    let pids =
        f.get(3).map(|p| p.split('+').filter(|p| !p.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
    Ok(Target {
        label: label.to_owned(),
        shared: Arc::new(Shared {
            cfg: Config { addr, authority, playlist, blocking, same_agent },
            part_ms: Hist::new(),
            delay_ms: Hist::new(),
            monitor: monitor.clone(),
        }),
        pids,
        queue: steps.iter().copied().collect(),
        bisect_left: bisect,
        best: None,
        worst: None,
        retrying: None,
        cpu_sum: 0.0,
        gbit_sum: 0.0,
    })
}

struct StepOptions {
    warmup: Duration,
    measure: Duration,
    stagger: f64,
    pass_share: f64,
    max_stall: f64,
}

/// `n` fresh players against `t` for warmup + measure; prints and returns (pass, Mbit/s).
#[allow(clippy::too_many_lines)]
async fn run_step(
    t: &mut Target,
    n: usize,
    o: &StepOptions,
    retry: bool,
    retries: u32,
    rand01: &mut impl FnMut() -> f64,
) -> (bool, f64, f64) {
    let mut players: Players = Vec::with_capacity(n);
    for id in 0..n {
        let c = Arc::new(Mutex::new(PlayerCounters::default()));
        let delay = Duration::from_secs_f64(rand01() * o.stagger);
        players.push((c.clone(), tokio::spawn(player(t.shared.clone(), c, id, delay))));
    }
    tokio::time::sleep(o.warmup + Duration::from_secs_f64(o.stagger)).await;
    let a = snapshot(&t.shared, &players, &t.pids);
    tokio::time::sleep(o.measure).await;
    let b = snapshot(&t.shared, &players, &t.pids);
    let (_, srv_rss) = proc_usage(&t.pids);
    for (_, h) in players.drain(..) {
        h.abort();
    }

    let secs = b.at.duration_since(a.at).as_secs_f64();
    let produced = b.produced - a.produced;
    let mut ok = 0usize;
    let (mut bytes, mut parts, mut errors, mut resyncs, mut requests) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut stall = 0.0;
    let mut last_error = None;
    for (x, y) in a.players.iter().zip(&b.players) {
        let p = y.parts - x.parts;
        let s = y.play.stall_s - x.play.stall_s;
        let e = y.errors - x.errors;
        bytes += y.bytes - x.bytes;
        parts += p;
        stall += s;
        errors += e;
        resyncs += y.resyncs - x.resyncs;
        requests += y.requests - x.requests;
        if e > 0 && last_error.is_none() {
            last_error.clone_from(&y.last_error);
        }
        if e == 0 && s <= o.max_stall * secs && (p as f64) >= 0.9 * produced as f64 - 1.0 {
            ok += 1;
        }
    }
    let pass = produced > 0 && ok as f64 >= o.pass_share * n as f64;
    let ok_share = ok as f64 / n.max(1) as f64;
    // Whether this is the last try of this count (see `load`: near misses are tried twice).
    let last_try = retry || retries == 0 || ok_share < 0.5;
    let mbps = bytes as f64 * 8.0 / secs / 1e6;
    let parts_per_player = parts as f64 / n.max(1) as f64 / secs;
    let stall_pct = stall / (n.max(1) as f64 * secs) * 100.0;
    let (_, pp) = percentiles(&a.part_ms, &b.part_ms, &[0.5, 0.99]);
    let (_, dd) = percentiles(&a.delay_ms, &b.delay_ms, &[0.5, 0.99]);
    // % of one core: clock ticks are 1/100 s (USER_HZ).
    let srv_cpu = (b.server_ticks - a.server_ticks) as f64 / secs;
    let own_cpu = (b.own_ticks - a.own_ticks) as f64 / secs;
    let all_cpu = (b.machine_ticks - a.machine_ticks) as f64 / secs;
    // Everything else: other processes, and kernel work charged to no process.
    let other_cpu = (all_cpu - srv_cpu - own_cpu).max(0.0);
    eprintln!(
        "{:<11} {:>5} {:>5} {:>4} {:>7.0} {:>7.2} {:>6.2} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6.0}% {:>6.0}% {:>6.0}% {:>6.0}%",
        t.label,
        n,
        ok,
        match (pass, retry, last_try) {
            (true, false, _) => "yes",
            (true, true, _) => "yes*",
            (false, _, false) => "no",
            (false, _, true) => "NO",
        },
        mbps,
        parts_per_player,
        stall_pct,
        errors,
        opt_ms(pp[0]),
        opt_ms(pp[1]),
        opt_ms(dd[0]),
        opt_ms(dd[1]),
        srv_cpu,
        own_cpu,
        other_cpu,
        all_cpu
    );
    if let Some(e) = &last_error {
        eprintln!("{:<11} e.g. {e}", "");
    }
    println!(
        "{{\"server\":\"{}\",\"players\":{n},\"retry\":{retry},\"ok_players\":{ok},\"pass\":{pass},\"seconds\":{secs:.2},\
         \"parts_produced\":{produced},\"parts_per_player_per_s\":{parts_per_player:.3},\"mbit_s\":{mbps:.1},\
         \"requests_per_s\":{:.0},\"stall_pct\":{stall_pct:.3},\"errors\":{errors},\"resyncs\":{resyncs},\
         \"part_ms_p50\":{},\"part_ms_p99\":{},\"late_ms_p50\":{},\"late_ms_p99\":{},\
         \"server_cpu_pct\":{srv_cpu:.1},\"server_rss_kb\":{srv_rss},\"loadgen_cpu_pct\":{own_cpu:.1},\
         \"machine_cpu_pct\":{all_cpu:.1},\"last_error\":{}}}",
        t.label,
        requests as f64 / secs,
        opt_ms(pp[0]),
        opt_ms(pp[1]),
        opt_ms(dd[0]),
        opt_ms(dd[1]),
        last_error.as_deref().map_or("null".into(), |e| format!("{e:?}"))
    );
    if pass {
        t.cpu_sum += srv_cpu;
        t.gbit_sum += mbps / 1000.0;
    }
    (pass, ok_share, mbps)
}

async fn load(args: &Args) -> Result<()> {
    let steps: Vec<usize> = args
        .opt("steps")
        .unwrap_or_else(|| "400,1000,2000,3000,4000,5000,6000".into())
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("--steps: {s:?}")))
        .collect::<Result<_, _>>()?;
    let bisect: u32 = args.num("bisect", 3)?;
    let retries: u32 = args.num("retries", 1)?;
    let same_agent = args.num("same-agent", 0u8)? == 1;
    let o = StepOptions {
        warmup: Duration::from_secs_f64(args.num("warmup", 3.0)?),
        measure: Duration::from_secs_f64(args.num("measure", 8.0)?),
        stagger: args.num("stagger", 2.0)?,
        pass_share: args.num("pass-share", 0.99)?,
        max_stall: args.num("max-stall", 0.01)?,
    };
    // Targets: --targets "LABEL,MODE,URL[,PIDS] …", or one with --url/--mode/--label/--cpu-pids.
    let specs: Vec<String> = match args.opt("targets") {
        Some(t) => t.split_whitespace().map(str::to_owned).collect(),
        None => {
            let mode = args.opt("mode").unwrap_or_else(|| "blocking".into());
            let label = args.opt("label").unwrap_or_else(|| mode.clone());
            let pids = args.opt("cpu-pids").unwrap_or_default().replace(',', "+");
            vec![format!("{label},{mode},{},{pids}", args.str("url")?)]
        }
    };
    let monitor_url = match args.opt("monitor") {
        Some(u) => u,
        None => specs[0].split(',').nth(2).unwrap_or_default().to_owned(),
    };
    let mon = Arc::new(Monitor::default());
    let mut targets: Vec<Target> =
        specs.iter().map(|s| parse_target(s, &mon, &steps, bisect, same_agent)).collect::<Result<_>>()?;
    tokio::spawn(monitor(mon.clone(), monitor_url));
    // Let the monitor find the live edge.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand01 = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    eprintln!(
        "{:<11} {:>5} {:>5} {:>4} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "server",
        "N",
        "ok",
        "pass",
        "Mbit/s",
        "parts/s",
        "stall%",
        "errors",
        "part p50",
        "part p99",
        "late p50",
        "late p99",
        "srv CPU",
        "gen CPU",
        "other",
        "all CPU"
    );
    // The targets take turns, one step each, so that whatever else the machine does affects
    // them alike.
    loop {
        let mut ran = false;
        for t in &mut targets {
            let Some(n) = t.queue.pop_front() else { continue };
            ran = true;
            let retry = t.retrying == Some(n);
            let (pass, ok_share, mbps) = run_step(t, n, &o, retry, retries, &mut rand01).await;
            // Let the server see the closed connections before the next step.
            tokio::time::sleep(Duration::from_secs(1)).await;
            if pass {
                t.retrying = None;
                if t.best.is_none_or(|(b, _)| n > b) {
                    t.best = Some((n, mbps));
                }
            } else if !retry && retries > 0 && ok_share >= 0.5 {
                // A near miss: once more, on this target's next turn.
                t.retrying = Some(n);
                t.queue.push_front(n);
                continue;
            } else {
                t.retrying = None;
                t.worst = Some(t.worst.map_or(n, |w| w.min(n)));
            }
            // After the first failure: stop ramping, bisect between the best pass and the worst fail.
            if let Some(hi) = t.worst {
                t.queue.clear();
                let lo = t.best.map_or(0, |b| b.0);
                let step = if hi - lo > 40 { 10 } else { 1 };
                let mid = (lo + hi) / 2 / step * step;
                if t.bisect_left > 0 && mid > lo && mid < hi {
                    t.bisect_left -= 1;
                    t.queue.push_back(mid);
                }
            }
        }
        if !ran {
            break;
        }
    }
    for t in &targets {
        let (best, best_mbps) = t.best.unwrap_or((0, 0.0));
        println!(
            "{{\"server\":\"{}\",\"summary\":true,\"max_players\":{best},\"first_failing\":{},\"mbit_s_at_max\":{best_mbps:.1},\
             \"server_cpu_pct_per_gbit_s\":{}}}",
            t.label,
            t.worst.map_or("null".into(), |w| w.to_string()),
            if t.gbit_sum > 0.0 { format!("{:.1}", t.cpu_sum / t.gbit_sum) } else { "null".into() }
        );
        eprintln!(
            "{}: max players that kept up: {best} ({best_mbps:.0} Mbit/s){}",
            t.label,
            t.worst.map_or(String::new(), |w| format!("; {w} did not"))
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mirror: the live stream to disk, for nginx

async fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    tokio::fs::write(&tmp, data).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

async fn mirror(args: &Args) -> Result<()> {
    let url = args.str("url")?;
    let root = PathBuf::from(args.str("root")?);
    let (addr, authority, path) = split_url(&url)?;
    let base = dir_of(&path).to_owned();
    let dir = root.join(base.trim_start_matches('/'));
    let playlist_name = path[base.len()..].to_owned();
    tokio::fs::create_dir_all(&dir).await?;
    let mut client = Client::new(addr, &authority, "onair-loadgen mirror".into());
    let mut want: Option<Pos> = None;
    let mut have: Option<Pos> = None;
    let mut session: Option<String> = None;
    let mut seg_have: Option<u64> = None;
    let mut written: VecDeque<PathBuf> = VecDeque::new();
    let mut errors = 0u64;
    eprintln!("mirror: {url} -> {}", dir.display());
    loop {
        let p = match want {
            Some(w) => format!("{path}?_HLS_msn={}&_HLS_part={}", w.msn, w.part),
            None => path.clone(),
        };
        let body = match client.get(&p, true).await {
            Ok(r) if r.status == StatusCode::OK => r.body,
            Ok(r) => {
                errors += 1;
                eprintln!("mirror: GET {p}: HTTP {} ({errors} errors)", r.status);
                want = None;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => {
                errors += 1;
                eprintln!("mirror: {e} ({errors} errors)");
                want = None;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let Some(pl) = Playlist::parse(&String::from_utf8_lossy(&body)).filter(|pl| !pl.parts.is_empty()) else {
            want = None;
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let sess = pl.session().unwrap_or_default().to_owned();
        if session.as_deref() != Some(sess.as_str()) {
            tokio::fs::create_dir_all(dir.join(&sess)).await?;
            let map = pl.map.clone().unwrap_or_default();
            let r = client.get(&format!("{base}{map}"), true).await?;
            if r.status != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            write_atomic(&dir.join(&map), &r.body).await?;
            session = Some(sess);
            have = None;
            seg_have = None;
        }
        let mut ok = true;
        let from = have;
        for part in pl.parts.iter().filter(|p| from.is_none_or(|h| p.pos > h)) {
            let r = client.get(&format!("{base}{}", part.uri), true).await;
            match r {
                Ok(r) if r.status == StatusCode::OK => {
                    let file = dir.join(&part.uri);
                    write_atomic(&file, &r.body).await?;
                    written.push_back(file);
                    have = Some(part.pos);
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        // Complete segments too (players that do not use parts fetch them; so does `fanout`).
        if ok && let (Some(done), Some(sess)) = (pl.last_complete, session.as_deref()) {
            let first = pl.parts.first().map_or(done, |p| p.pos.msn);
            for msn in seg_have.map_or(first, |s| s + 1).max(first)..=done {
                let uri = format!("{sess}/{msn}.m4s");
                match client.get(&format!("{base}{uri}"), true).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        let file = dir.join(&uri);
                        write_atomic(&file, &r.body).await?;
                        written.push_back(file);
                        seg_have = Some(msn);
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        if ok {
            // The playlist last, once every part it names is on disk: the same bytes as the origin's.
            write_atomic(&dir.join(&playlist_name), &body).await?;
        }
        // Keep about two minutes of parts.
        while written.len() > 400 {
            if let Some(old) = written.pop_front() {
                let _ = tokio::fs::remove_file(old).await;
            }
        }
        want = have.map(|h| pl.next_after(h));
    }
}

// ---------------------------------------------------------------------------------------------
// fanout: CPU per GiB of many clients fetching the newest segment

/// The newest complete segment of the playlist at `path`, as a path on the same server.
async fn newest_segment(client: &mut Client, path: &str) -> Option<String> {
    let r = client.get(path, true).await.ok().filter(|r| r.status == StatusCode::OK)?;
    let pl = Playlist::parse(&String::from_utf8_lossy(&r.body))?;
    Some(format!("{}{}/{}.m4s", dir_of(path), pl.session()?, pl.last_complete?))
}

struct FanoutResult {
    bytes: u64,
    requests: u64,
    errors: u64,
    cpu_ticks: u64,
}

/// One server's turn: `clients` clients fetch the newest segment for `seconds`.
async fn fanout_turn(url: &str, pids: &[String], clients: usize, seconds: f64) -> Result<FanoutResult> {
    let (addr, authority, path) = split_url(url)?;
    let mut watcher = Client::new(addr, &authority, "onair-loadgen fanout watcher".into());
    let newest = Arc::new(Mutex::new(newest_segment(&mut watcher, &path).await.ok_or("no complete segment yet")?));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let watch = {
        let newest = newest.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(n) = newest_segment(&mut watcher, &path).await {
                    *newest.lock().unwrap() = n;
                }
            }
        })
    };
    let (t0, _) = proc_usage(pids);
    let tasks: Vec<JoinHandle<()>> = (0..clients)
        .map(|i| {
            let (newest, bytes, requests, errors) = (newest.clone(), bytes.clone(), requests.clone(), errors.clone());
            let mut client = Client::new(addr, &authority, format!("onair-loadgen fanout {i}"));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let path = newest.lock().unwrap().clone();
                    match client.get(&path, false).await {
                        Ok(r) if r.status == StatusCode::OK => {
                            bytes.fetch_add(r.len as u64, Ordering::Relaxed);
                            requests.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let (t1, _) = proc_usage(pids);
    let _ = watch.await;
    Ok(FanoutResult {
        bytes: bytes.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        cpu_ticks: t1.saturating_sub(t0),
    })
}

async fn fanout(args: &Args) -> Result<()> {
    let clients: usize = args.num("clients", 50)?;
    let seconds: f64 = args.num("seconds", 10.0)?;
    let rounds: u32 = args.num("rounds", 3)?;
    let hz = 100.0; // USER_HZ
    let mut targets = Vec::new();
    for spec in args.str("targets")?.split_whitespace() {
        let f: Vec<&str> = spec.split(',').collect();
        let [label, url, pids] = f[..] else { return Err(format!("target {spec:?}: LABEL,URL,PID[+PID]").into()) };
        targets.push((label.to_owned(), url.to_owned(), pids.split('+').map(str::to_owned).collect::<Vec<_>>()));
    }
    let mut totals: Vec<FanoutResult> =
        targets.iter().map(|_| FanoutResult { bytes: 0, requests: 0, errors: 0, cpu_ticks: 0 }).collect();
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    eprintln!(
        "{:<8} {:>5} {:>9} {:>8} {:>6} {:>8} {:>9}",
        "server", "round", "GiB", "req", "errors", "CPU s", "CPU s/GiB"
    );
    for round in 1..=rounds {
        for (i, (label, url, pids)) in targets.iter().enumerate() {
            let r = fanout_turn(url, pids, clients, seconds).await?;
            let (gib, cpu) = (r.bytes as f64 / GIB, r.cpu_ticks as f64 / hz);
            eprintln!(
                "{label:<8} {round:>5} {gib:>9.2} {:>8} {:>6} {cpu:>8.2} {:>9.3}",
                r.requests,
                r.errors,
                cpu / gib.max(1e-9)
            );
            println!(
                "{{\"server\":\"{label}\",\"round\":{round},\"bytes\":{},\"requests\":{},\"errors\":{},\"cpu_s\":{cpu:.2},\"cpu_s_per_gib\":{:.4}}}",
                r.bytes,
                r.requests,
                r.errors,
                cpu / gib.max(1e-9)
            );
            let t = &mut totals[i];
            t.bytes += r.bytes;
            t.requests += r.requests;
            t.errors += r.errors;
            t.cpu_ticks += r.cpu_ticks;
        }
    }
    let per_gib: Vec<f64> =
        totals.iter().map(|t| (t.cpu_ticks as f64 / hz) / (t.bytes as f64 / GIB).max(1e-9)).collect();
    let reference = *per_gib.last().unwrap_or(&1.0);
    for ((label, _, _), (t, g)) in targets.iter().zip(totals.iter().zip(&per_gib)) {
        let ratio = g / reference;
        eprintln!(
            "{label}: {:.2} GiB in {} requests ({} errors), {:.2} CPU s: {g:.3} CPU s/GiB = {ratio:.2}x the reference",
            t.bytes as f64 / GIB,
            t.requests,
            t.errors,
            t.cpu_ticks as f64 / hz
        );
        println!(
            "{{\"summary\":true,\"server\":\"{label}\",\"bytes\":{},\"requests\":{},\"errors\":{},\"cpu_s\":{:.2},\"cpu_s_per_gib\":{g:.4},\"vs_reference\":{ratio:.3}}}",
            t.bytes,
            t.requests,
            t.errors,
            t.cpu_ticks as f64 / hz
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("usage: onair-loadgen load|mirror|fanout … (see bench/README.md)");
        std::process::exit(2);
    };
    let args = Args::parse(rest)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd.as_str() {
        "load" => rt.block_on(load(&args)),
        "mirror" => rt.block_on(mirror(&args)),
        "fanout" => rt.block_on(fanout(&args)),
        other => Err(format!("unknown command {other:?}: load, mirror or fanout").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002\n#EXT-X-PART-INF:PART-TARGET=0.334\n\
#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-MAP:URI=\"ab/init.mp4\"\n#EXTINF:2.000,\nab/3.m4s\n\
#EXT-X-PART:DURATION=0.333,URI=\"ab/4.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.334,URI=\"ab/4.1.m4s\"\n\
#EXTINF:0.667,\nab/4.m4s\n#EXT-X-PART:DURATION=0.333,URI=\"ab/5.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ab/5.1.m4s\"\n";

    #[test]
    fn parses_playlist() {
        let pl = Playlist::parse(PL).unwrap();
        assert_eq!(pl.session(), Some("ab"));
        assert_eq!(pl.last_complete, Some(4));
        assert!((pl.part_hold_back - 1.002).abs() < 1e-9);
        let pos: Vec<(u64, u32, &str)> = pl.parts.iter().map(|p| (p.pos.msn, p.pos.part, p.uri.as_str())).collect();
        assert_eq!(pos, vec![(4, 0, "ab/4.0.m4s"), (4, 1, "ab/4.1.m4s"), (5, 0, "ab/5.0.m4s")]);
        assert_eq!(pl.next_after(Pos { msn: 4, part: 1 }), Pos { msn: 5, part: 0 });
        assert_eq!(pl.next_after(Pos { msn: 5, part: 0 }), Pos { msn: 5, part: 1 });
    }

    #[test]
    fn playback_stalls() {
        let t = Instant::now();
        let mut p = Playback::default();
        p.add(t, 1.0);
        p.start(t);
        p.add(t + Duration::from_millis(500), 0.5); // 0.5 played, 1.0 ahead
        assert_eq!(p.stall_s, 0.0);
        p.add(t + Duration::from_millis(2000), 0.5); // 1.5 s elapsed: would need 1.5, had 1.0 → 0.5 s stall
        assert!((p.stall_s - 0.5).abs() < 1e-6);
        assert_eq!(p.stalls, 1);
        assert!((p.stall_at(t + Duration::from_millis(3000)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn url() {
        let (a, auth, path) = split_url("http://127.0.0.1:8080/live/s/llhls.m3u8").unwrap();
        assert_eq!(a.port(), 8080);
        assert_eq!(auth, "127.0.0.1:8080");
        assert_eq!(dir_of(&path), "/live/s/");
    }
}
