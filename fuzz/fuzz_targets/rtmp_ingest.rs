//! The engine's sans-IO RTMP state machine `onair_engine::rtmp::Ingest`, fed in chunks whose
//! sizes come from the input, with `take_output` after each, until the first error or
//! `closing()`.
//!
//! Input: byte 0 picks the mode, byte 1 (low 3 bits) the number of chunk sizes that follow as
//! little-endian u16s (0 = the whole buffer at once), cycled; the rest is the body.
//!
//! * mode 0: the body is everything the client sends, from the first handshake byte;
//! * mode 1: a valid client handshake (C0 C1 C2), then the body as the RTMP chunk stream;
//! * mode 2: a valid handshake, `connect` (with tcUrl) and a signed `publish` of stream `s`
//!   (recorded once at start-up from rml_rtmp's client talking to an `Ingest`), then the body as
//!   further chunk-stream bytes of a publishing client;
//! * mode 3: a valid handshake, then a live rml_rtmp `ClientSession` talks to this `Ingest`: the
//!   body first picks how it starts (the valid signed publish, which must be accepted; another
//!   application, a tampered key or a play request, which must be refused; any key), then is
//!   decoded into client actions: video / audio messages
//!   (real tags of the OBS test stream, mutated or truncated ones, arbitrary payloads) with
//!   arbitrary timestamps sent through `publish_video_data` / `publish_audio_data`, metadata,
//!   stop and re-publish, raw bytes, expiry checks and looks at the stream (a playable one serves its playlists).
//!
//! Checks: no panic; a valid publish is accepted whatever the chunking, a refused one leaves no
//! stream; once the connection is dropped the stream is offline (the registry is empty).
//!
//! rml_rtmp 0.8 itself panics on some chunk streams (see `README.md`, "Findings"). By default
//! such a panic is a crash like any other. With `ONAIR_FUZZ_ALLOW_RML_PANICS=1` in the
//! environment, a panic raised inside rml_rtmp / rml_amf0 source ends the connection instead
//! (as it ends the connection's task in the engine) and fuzzing goes on past it; panics
//! anywhere else still abort.
#![no_main]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair_engine::hub::{Now, PlaylistKind, PlaylistRequest};
use onair_engine::rtmp::{Ingest, IngestContext};
use onair_engine::{Registry, SigningKey};
use onair_fuzz::{REAL, allow_rml_panics};
use onair_policy::Policy;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

const REMOTE: &str = "127.0.0.1:50123";
const LOCAL: &str = "127.0.0.1:1935";
const TC_URL: &str = "rtmp://127.0.0.1:1935/live";
/// S0 + S1 + S2.
const HANDSHAKE_REPLY: usize = 1 + 1536 + 1536;

fn context() -> Arc<IngestContext> {
    Arc::new(IngestContext {
        registry: Registry::new(onair_hls::HlsConfig::default()),
        signing_key: SigningKey::new("k"),
        app: "live".into(),
    })
}

/// One connection: feeds the ingest in chunks, collects what it sends back.
struct Conn {
    ingest: Ingest,
    sizes: Vec<usize>,
    next_size: usize,
    /// Everything the ingest sent, not yet given to the client.
    from_server: Vec<u8>,
    /// Server bytes still to drop before the client session sees any (the handshake reply).
    skip: usize,
    /// Everything fed to the ingest, one entry per `send` (for the start-up recording).
    sent: Vec<Vec<u8>>,
    /// An error or `closing()` happened: nothing more is fed.
    done: bool,
}

impl Conn {
    fn new(ctx: Arc<IngestContext>, sizes: Vec<usize>) -> Self {
        Conn {
            ingest: Ingest::new(ctx, REMOTE.parse().unwrap(), LOCAL.parse().unwrap()),
            sizes,
            next_size: 0,
            from_server: Vec::new(),
            skip: 0,
            sent: Vec::new(),
            done: false,
        }
    }

    /// Feeds `bytes`; returns false once the connection is over.
    fn send(&mut self, mut bytes: &[u8]) -> bool {
        self.sent.push(bytes.to_vec());
        while !bytes.is_empty() && !self.done {
            let n = if self.sizes.is_empty() {
                bytes.len()
            } else {
                let n = self.sizes[self.next_size % self.sizes.len()];
                self.next_size += 1;
                n.clamp(1, bytes.len())
            };
            let (chunk, rest) = bytes.split_at(n);
            bytes = rest;
            let Ok(result) = catch_unwind(AssertUnwindSafe(|| self.ingest.handle_input(chunk, Now::system()))) else {
                // A tolerated rml_rtmp panic (see `allow_rml_panics`): the task would be gone.
                self.done = true;
                return false;
            };
            let out = self.ingest.take_output();
            let dropped = self.skip.min(out.len());
            self.skip -= dropped;
            self.from_server.extend_from_slice(&out[dropped..]);
            if result.is_err() || self.ingest.closing() {
                self.done = true;
            }
        }
        !self.done
    }
}

struct Setup {
    /// C0 C1 C2.
    handshake: Vec<u8>,
    /// Handshake, connect, createStream, publish: everything a publishing client sent, in the
    /// flights it sent them (each after reading the server's answer to the previous one:
    /// rml_rtmp refuses a `publish` that arrives in the same read as the `connect`, before the
    /// application accepted it, as a client that does not wait for `_result` would send it).
    publish: Vec<Vec<u8>>,
    stream_key: String,
}

/// Shuttles bytes between the client and the ingest until `until` accepts an event (or
/// nothing moves any more). Returns whether it did.
fn pump(
    conn: &mut Conn,
    client: &mut ClientSession,
    mut on_event: impl FnMut(&mut ClientSession, &ClientSessionEvent) -> (Vec<u8>, bool),
) -> bool {
    for _ in 0..16 {
        if conn.from_server.is_empty() {
            return false;
        }
        let input = std::mem::take(&mut conn.from_server);
        let Ok(results) = client.handle_input(&input) else { return false };
        let mut outbound = Vec::new();
        let mut reached = false;
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => outbound.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(e) => {
                    let (more, stop) = on_event(client, &e);
                    outbound.extend(more);
                    reached |= stop;
                }
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !outbound.is_empty() && !conn.send(&outbound) {
            return reached;
        }
        if reached {
            return true;
        }
    }
    false
}

fn publish_request(client: &mut ClientSession, key: &str) -> Vec<u8> {
    match client.request_publishing(key.into(), PublishRequestType::Live) {
        Ok(ClientSessionResult::OutboundResponse(p)) => p.bytes,
        other => panic!("request_publishing: {other:?}"),
    }
}

/// Connects to `app` on a connection whose handshake is done, then asks to publish `key` (or
/// to play it); returns the client and whether the server accepted the request.
fn connect_and_request(conn: &mut Conn, app: &str, key: &str, play: bool) -> (ClientSession, bool) {
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(TC_URL.into());
    let (mut client, initial) = ClientSession::new(config).expect("client session");
    for r in initial {
        if let ClientSessionResult::OutboundResponse(p) = r {
            conn.send(&p.bytes);
        }
    }
    match client.request_connection(app.into()) {
        Ok(ClientSessionResult::OutboundResponse(p)) => {
            conn.send(&p.bytes);
        }
        other => panic!("request_connection: {other:?}"),
    }
    let mut accepted = false;
    pump(conn, &mut client, |client, e| match e {
        ClientSessionEvent::ConnectionRequestAccepted if play => match client.request_playback(key.into()) {
            Ok(ClientSessionResult::OutboundResponse(p)) => (p.bytes, false),
            other => panic!("request_playback: {other:?}"),
        },
        ClientSessionEvent::ConnectionRequestAccepted => (publish_request(client, key), false),
        ClientSessionEvent::PublishRequestAccepted | ClientSessionEvent::PlaybackRequestAccepted => {
            accepted = true;
            (Vec::new(), true)
        }
        ClientSessionEvent::ConnectionRequestRejected { .. } => (Vec::new(), true),
        _ => (Vec::new(), false),
    });
    (client, accepted)
}

fn connect_and_publish(conn: &mut Conn, key: &str) -> Option<ClientSession> {
    let (client, accepted) = connect_and_request(conn, "live", key, false);
    accepted.then_some(client)
}

fn client_handshake() -> (Vec<u8>, Conn) {
    let mut conn = Conn::new(context(), Vec::new());
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1().expect("C0 C1");
    assert!(conn.send(&c0c1));
    let s0s1s2 = std::mem::take(&mut conn.from_server);
    assert_eq!(s0s1s2.len(), HANDSHAKE_REPLY);
    let HandshakeProcessResult::Completed { response_bytes: c2, remaining_bytes } =
        hs.process_bytes(&s0s1s2).expect("client handshake")
    else {
        panic!("the client handshake did not complete on S0 S1 S2");
    };
    assert!(remaining_bytes.is_empty());
    assert!(conn.send(&c2));
    let mut handshake = c0c1;
    handshake.extend_from_slice(&c2);
    (handshake, conn)
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let signed = onair_policy::sign_url(
        b"k",
        "rtmp://127.0.0.1:1935/live/s",
        &Policy { url_expire: u64::MAX / 2, ..Default::default() },
    )
    .expect("sign");
    let stream_key = signed.strip_prefix("rtmp://127.0.0.1:1935/live/").expect("prefix").to_owned();
    let (handshake, mut conn) = client_handshake();
    connect_and_publish(&mut conn, &stream_key).expect("the recorded client publishes");
    assert_eq!(conn.ingest.stream_name(), Some("s"));
    assert!(!conn.done);
    Setup { handshake, publish: conn.sent, stream_key }
});

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ts {
    Next,
    Same,
    Step(u16),
    Back(u16),
    Abs(u32),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    /// The n-th real tag of the track.
    Real(u16),
    /// The sequence header of the track (AVC record / AudioSpecificConfig).
    Config,
    /// A real tag (or the sequence header when `config`) with one byte changed.
    Mutated {
        index: u16,
        config: bool,
        at: u16,
        xor: u8,
    },
    /// A real tag (or the sequence header) cut short.
    Truncated {
        index: u16,
        config: bool,
        len: u16,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Video(Ts, Payload),
    Audio(Ts, Payload),
    /// A run of real tags in file order, both tracks.
    Real {
        start: u16,
        n: u8,
    },
    Metadata {
        width: Option<u32>,
        height: Option<u32>,
        fps: Option<f32>,
        codec: Option<u32>,
        encoder: Option<String>,
    },
    Stop,
    Republish,
    /// Raw bytes on the chunk stream.
    Raw(Vec<u8>),
    Expire(u64),
    Look,
}

fn payload(p: Payload, video: bool) -> Bytes {
    let tags = if video { &REAL.video } else { &REAL.audio };
    let config = if video { &REAL.video_config_tag } else { &REAL.audio_config_tag };
    let pick =
        |index: u16, cfg: bool| if cfg { config.clone() } else { tags[usize::from(index) % tags.len()].body.clone() };
    match p {
        Payload::Real(i) => pick(i, false),
        Payload::Config => config.clone(),
        Payload::Mutated { index, config, at, xor } => {
            let mut b = pick(index, config).to_vec();
            if !b.is_empty() {
                let at = usize::from(at) % b.len();
                b[at] ^= xor;
            }
            Bytes::from(b)
        }
        Payload::Truncated { index, config, len } => {
            let b = pick(index, config);
            b.slice(..usize::from(len).min(b.len()))
        }
        Payload::Raw(b) => Bytes::from(b),
    }
}

fn step(ts: u32, s: Ts, frame: u32) -> u32 {
    match s {
        Ts::Next => ts.wrapping_add(frame),
        Ts::Same => ts,
        Ts::Step(d) => ts.wrapping_add(u32::from(d)),
        Ts::Back(d) => ts.wrapping_sub(u32::from(d)),
        Ts::Abs(v) => v,
    }
}

fn packet(r: Result<ClientSessionResult, rml_rtmp::sessions::ClientSessionError>) -> Vec<u8> {
    match r {
        Ok(ClientSessionResult::OutboundResponse(p)) => p.bytes,
        _ => Vec::new(),
    }
}

fn look(ctx: &IngestContext) {
    if let Some(stream) = ctx.registry.get("s") {
        let now = std::time::Instant::now();
        let playable = stream.is_playable();
        for kind in [PlaylistKind::LowLatency, PlaylistKind::Plain] {
            let served = stream.playlist(&PlaylistRequest { kind, msn: None, part: None, viewer: 1 }, now);
            if playable {
                assert!(matches!(served, Ok(Some(_))), "a playable stream serves its playlists");
            }
        }
        let _ = stream.figures(now);
    }
}

/// How a mode-3 connection starts.
#[derive(Arbitrary, Debug)]
enum Start {
    /// The valid signed publish of `s`: must be accepted.
    Publish,
    /// Another application: refused unless it is `live`.
    App(String),
    /// The valid key with one byte changed: refused (unless `xor` is 0).
    Tampered { at: u16, xor: u8 },
    /// Any stream key.
    Key(String),
    /// Playback: always refused.
    Play(String),
}

fn client_ops(conn: &mut Conn, ctx: &IngestContext, body: &[u8]) {
    let mut u = Unstructured::new(body);
    let Ok(start) = Start::arbitrary(&mut u) else { return };
    let valid = SETUP.stream_key.as_str();
    let (mut client, accepted) = match &start {
        Start::Publish => connect_and_request(conn, "live", valid, false),
        Start::App(app) => connect_and_request(conn, app, valid, false),
        Start::Tampered { at, xor } => {
            let mut key = valid.as_bytes().to_vec();
            let at = usize::from(*at) % key.len();
            key[at] ^= xor;
            connect_and_request(conn, "live", &String::from_utf8_lossy(&key), false)
        }
        Start::Key(key) => connect_and_request(conn, "live", key, false),
        Start::Play(key) => connect_and_request(conn, "live", key, true),
    };
    let should = match &start {
        Start::Publish => Some(true),
        Start::App(app) => (app != "live").then_some(false),
        Start::Tampered { xor, .. } => (*xor != 0).then_some(false),
        Start::Key(_) => None,
        Start::Play(_) => Some(false),
    };
    if let Some(should) = should {
        assert_eq!(accepted, should, "{start:?} with chunk sizes {:?}", conn.sizes);
    }
    if accepted && !matches!(start, Start::Play(_)) {
        assert!(conn.ingest.stream_name().is_some());
    } else {
        assert_eq!(conn.ingest.stream_name(), None, "{start:?}");
        assert!(ctx.registry.list().is_empty(), "{start:?} left a stream");
    }
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(u) else { return };
    let (mut vts, mut ats) = (0u32, 0u32);
    // Server output is not read back during the ops, except to re-publish.
    for op in ops {
        if conn.done {
            break;
        }
        let bytes = match op {
            Op::Video(ts, p) => {
                vts = step(vts, ts, 33);
                packet(client.publish_video_data(payload(p, true), RtmpTimestamp::new(vts), false))
            }
            Op::Audio(ts, p) => {
                ats = step(ats, ts, 21);
                packet(client.publish_audio_data(payload(p, false), RtmpTimestamp::new(ats), false))
            }
            Op::Real { start, n } => {
                let mut out = Vec::new();
                let (v0, a0) = (usize::from(start), usize::from(start) * 3 / 2);
                for i in 0..usize::from(n % 32) {
                    let v = &REAL.video[(v0 + i) % REAL.video.len()];
                    out.extend(packet(client.publish_video_data(
                        v.body.clone(),
                        RtmpTimestamp::new(v.timestamp_ms),
                        false,
                    )));
                    for a in REAL.audio.iter().skip(a0 + i * 3 / 2).take(2) {
                        out.extend(packet(client.publish_audio_data(
                            a.body.clone(),
                            RtmpTimestamp::new(a.timestamp_ms),
                            false,
                        )));
                    }
                }
                out
            }
            Op::Metadata { width, height, fps, codec, encoder } => {
                let mut m = StreamMetadata::new();
                m.video_width = width;
                m.video_height = height;
                m.video_frame_rate = fps;
                m.video_codec_id = codec;
                m.encoder = encoder;
                packet(client.publish_metadata(&m))
            }
            Op::Stop => match client.stop_publishing() {
                Ok(results) => results
                    .into_iter()
                    .filter_map(|r| match r {
                        ClientSessionResult::OutboundResponse(p) => Some(p.bytes),
                        _ => None,
                    })
                    .flatten()
                    .collect(),
                Err(_) => Vec::new(),
            },
            Op::Republish => {
                // Only from the Connected state (after Stop); the answers are pumped back.
                if let Ok(ClientSessionResult::OutboundResponse(p)) =
                    client.request_publishing(SETUP.stream_key.clone(), PublishRequestType::Live)
                    && conn.send(&p.bytes)
                {
                    pump(conn, &mut client, |_, e| {
                        (Vec::new(), matches!(e, ClientSessionEvent::PublishRequestAccepted))
                    });
                }
                Vec::new()
            }
            Op::Raw(b) => b,
            Op::Expire(now) => {
                conn.ingest.enforce_expiry(now);
                if conn.ingest.closing() {
                    conn.done = true;
                }
                Vec::new()
            }
            Op::Look => {
                look(ctx);
                Vec::new()
            }
        };
        conn.send(&bytes);
    }
    look(ctx);
}

fuzz_target!(|data: &[u8]| {
    let [mode, count, rest @ ..] = data else { return };
    let count = usize::from(count & 7);
    if rest.len() < 2 * count {
        return;
    }
    let (size_bytes, body) = rest.split_at(2 * count);
    let sizes: Vec<usize> = size_bytes.chunks_exact(2).map(|c| usize::from(u16::from_le_bytes([c[0], c[1]]))).collect();
    allow_rml_panics();
    let setup = &*SETUP;
    let ctx = context();
    let mut conn = Conn::new(ctx.clone(), sizes);
    match mode % 4 {
        0 => {
            conn.send(body);
        }
        1 => {
            assert!(conn.send(&setup.handshake), "a valid handshake was refused");
            conn.send(body);
        }
        2 => {
            for flight in &setup.publish {
                assert!(conn.send(flight), "a valid publish was refused with chunk sizes {:?}", conn.sizes);
            }
            assert_eq!(conn.ingest.stream_name(), Some("s"));
            conn.send(body);
        }
        _ => {
            conn.skip = HANDSHAKE_REPLY;
            assert!(conn.send(&setup.handshake), "a valid handshake was refused");
            client_ops(&mut conn, &ctx, body);
        }
    }
    let _ = conn.ingest.stream_expire();
    drop(conn);
    assert!(ctx.registry.list().is_empty(), "the stream stayed live after its connection ended");
});
