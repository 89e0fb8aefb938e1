//! The status API's types (`GET /api/streams[/<stream>]`, the control API's stream list, the
//! app's health panel) and their computation from a stream's figures. Pure: the time comes in.

use std::time::Instant;

use serde::Serialize;

use crate::hub::Stream;

/// One stream as the status API shows it.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct StreamStatus {
    pub name: String,
    /// Playable now (an init segment and at least one part).
    pub live: bool,
    /// The publisher's connection dropped: the stream waits for it to come back (the grace
    /// period, `publish_grace_s`), still listed and served as the same broadcast.
    pub reconnecting: bool,
    pub title: String,
    pub video: Option<VideoStatus>,
    pub audio: Option<AudioStatus>,
    pub bitrate_kbps: u64,
    pub fps: Option<f64>,
    pub keyframe_interval_s: Option<f64>,
    pub bframes: bool,
    pub uptime_s: Option<f64>,
    pub viewers: Viewers,
    pub urls: Urls,
    /// The stream's Matrix room, for the viewer page's guest chat; `null` without Matrix.
    pub chat: Option<ChatInfo>,
    /// The stream's restream destinations and their state (never their keys).
    pub restream: Vec<crate::restream::RestreamStatus>,
}

/// Where a browser finds a stream's chat.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ts_rs::TS)]
pub struct ChatInfo {
    /// The homeserver's client-server base URL.
    pub homeserver: String,
    /// `#onair_<stream>:<server>`; `null` when not known yet (not logged in).
    pub alias: Option<String>,
    /// `!opaque:server`; `null` until the room is found or created.
    pub room_id: Option<String>,
    /// The engine's Matrix state: `connected`, `connecting`, `unreachable: …`, ….
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Default, ts_rs::TS)]
pub struct Viewers {
    /// HLS/LL-HLS players that loaded a playlist in the last 10 s (one per address and user agent).
    pub hls: usize,
    /// Connected WebRTC (WHEP) sessions.
    pub webrtc: usize,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct VideoStatus {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct AudioStatus {
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u8,
}

/// The stream's URLs, relative to the server; in `/api/streams`, `llhls` and `hls` are at
/// `hls.public_base_url` (a CDN or caching proxy) when it is set.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct Urls {
    pub llhls: String,
    pub whep: String,
    pub hls: String,
    pub viewer: String,
    pub embed: String,
}

/// The status of stream `name` at `now`: offline unless `stream` is live. The title is the
/// stream name and there is no chat; the control fills those in.
pub fn stream_status(name: &str, stream: Option<&Stream>, webrtc_sessions: usize, now: Instant) -> StreamStatus {
    let urls = Urls {
        llhls: format!("/live/{name}/llhls.m3u8"),
        whep: format!("/live/{name}/whep"),
        hls: format!("/live/{name}/playlist.m3u8"),
        viewer: format!("/{name}"),
        embed: format!("/embed/{name}"),
    };
    let mut s = StreamStatus {
        name: name.into(),
        live: false,
        reconnecting: false,
        title: name.into(),
        video: None,
        audio: None,
        bitrate_kbps: 0,
        fps: None,
        keyframe_interval_s: None,
        bframes: false,
        uptime_s: None,
        viewers: Viewers::default(),
        urls,
        chat: None,
        restream: Vec::new(),
    };
    let Some(stream) = stream else { return s };
    s.viewers.hls = stream.hls_viewers(now);
    s.viewers.webrtc = webrtc_sessions;
    let Some(f) = stream.figures(now) else { return s };
    s.live = f.playable;
    s.reconnecting = f.reconnecting;
    s.fps = f.stats.fps.or_else(|| f.video.as_ref().and_then(|v| v.fps)).map(|f| (f * 100.0).round() / 100.0);
    s.video =
        f.video.as_ref().map(|v| VideoStatus { codec: v.codec_string(), width: v.width, height: v.height, fps: s.fps });
    s.audio = f.audio.as_ref().map(|a| AudioStatus {
        codec: a.codec_string(),
        sample_rate: a.sample_rate,
        channels: a.channels,
    });
    s.bitrate_kbps = f.stats.bitrate_kbps;
    s.keyframe_interval_s = f.stats.keyframe_interval_s;
    s.bframes = f.stats.bframes;
    s.uptime_s = Some((f.uptime.as_secs_f64() * 10.0).round() / 10.0);
    s
}

/// How viewers on the internet reach this engine: learnt from the router (UPnP-IGD, NAT-PMP/PCP)
/// and STUN at start and on Go live, kept up to date while live (`crate::reach` fills it in).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ts_rs::TS)]
pub struct ReachStatus {
    pub state: ReachState,
    /// The base of the links for viewers on the internet (`https://tv.example.org`,
    /// `http://198.51.100.7:8080`); `null` unless `reachable`.
    pub public_base: Option<String>,
    /// This network's public address as a STUN server saw it (or the router said, without STUN).
    pub public_ip: Option<String>,
    /// The external address the router reported (UPnP/NAT-PMP); private or different from
    /// `public_ip` means a second NAT (carrier-grade NAT).
    pub router_external_ip: Option<String>,
    /// Port mapping in plain words: `off`, `UPnP-IGD`, `NAT-PMP`, `refused: …`, `no router answered`.
    pub mapping: String,
    /// The ports the router forwards to this machine now.
    pub mappings: Vec<PortMapping>,
    /// The ports the streamer must forward by hand (state `lan_only`).
    pub ports_to_forward: Vec<PortMapping>,
    /// What to do, in plain words, for the state.
    pub advice: String,
}

/// The reachability of the engine from the internet.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ReachState {
    /// Not learnt yet.
    Checking,
    /// Viewers on the internet can open `public_base`.
    Reachable,
    /// Only this network reaches the engine (no mapping: UPnP off, refused or no router).
    LanOnly,
    /// Behind carrier-grade (double) NAT: no mapping helps; use TURN and an external relay.
    Cgnat,
}

/// One forwarded (or to-be-forwarded) port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ts_rs::TS)]
pub struct PortMapping {
    /// `HTTP`, `HTTPS`, `RTMP`, `RTMPS`, `WebRTC`.
    pub purpose: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub external_port: u16,
    /// This machine's `ip:port` the router sends it to.
    pub internal: String,
    /// Seconds the router keeps the mapping (renewed before then); `null` when not mapped.
    pub lease_s: Option<u64>,
}

impl Default for ReachStatus {
    fn default() -> Self {
        ReachStatus {
            state: ReachState::Checking,
            public_base: None,
            public_ip: None,
            router_external_ip: None,
            mapping: "off".into(),
            mappings: Vec::new(),
            ports_to_forward: Vec::new(),
            advice: String::new(),
        }
    }
}

/// HTTPS (and RTMPS) as served now (`crate::tls` fills it in).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ts_rs::TS)]
pub struct HttpsStatus {
    /// `off`, `file` (the user's certificate and key), `acme` (automatic certificates).
    pub mode: String,
    /// `off`, `ok`, `obtaining`, `renewing`, `error` (plain HTTP on the LAN goes on meanwhile).
    pub state: String,
    /// The certificate's domain name.
    pub domain: Option<String>,
    /// When the certificate in use expires (Unix seconds).
    pub expires_unix_s: Option<u64>,
    /// The last problem, in plain words (no secret).
    pub error: Option<String>,
    /// The HTTPS port, when HTTPS is served.
    pub https_port: Option<u16>,
    /// The RTMPS port, when RTMPS is served.
    pub rtmps_port: Option<u16>,
}

impl Default for HttpsStatus {
    fn default() -> Self {
        HttpsStatus {
            mode: "off".into(),
            state: "off".into(),
            domain: None,
            expires_unix_s: None,
            error: None,
            https_port: None,
            rtmps_port: None,
        }
    }
}
