//! WebRTC playback (WHEP) for OnAir: every viewer of every stream on **one UDP port** (plus an
//! optional ICE-TCP port), built on webrtc-rs's sans-IO core, the [`rtc`] crate.
//!
//! # Contract
//!
//! * [`WebrtcServer::start`] binds the UDP port (and the TCP port, if configured) and spawns
//!   **one shard per core** (`ONAIR_WEBRTC_SHARDS` overrides;
//!   [`WebrtcServer::start_with_shards`]), each owning the peer connections of the sessions it
//!   was given (new sessions go to the shard with the fewest); socket reader tasks route every
//!   packet to its session's shard through one routing table. [`WebrtcServer`] is a cheap
//!   `Clone` handle. [`WebrtcServer::stats`] reads the shards' counters (packets sent, send
//!   errors, drops, time busy).
//! * **Limits first** ([`WebrtcLimits`] in [`WebrtcConfig::limits`]): an offer starts with
//!   [`WebrtcServer::reserve`] for a stream and the player's IP, which checks the sessions in
//!   total, per stream, per client IP (IPv6: per /64) and still connecting, and counts the new
//!   one under one short lock (concurrent offers cannot overshoot) — before the caller makes a
//!   broadcast receiver and before any certificate, task or buffer exists. Over a limit it is
//!   [`WhepError::Busy`] naming the limit (to become `503` + `Retry-After`; the player then plays
//!   HLS). The [`Reservation`] lives as long as the session; a session still not connected
//!   [`WebrtcLimits::connect_timeout`] after its offer is removed. ICE-TCP connections beyond
//!   [`WebrtcLimits::ice_tcp_connections`] are closed as they are accepted. Refusals are
//!   counted by limit in [`WebrtcStats::refused`].
//! * [`WebrtcServer::answer`] takes a reservation, a WHEP offer (recvonly audio and/or video),
//!   the stream's [`StreamTracks`] and a `tokio::sync::broadcast::Receiver<Arc<Sample>>` of its
//!   media, and returns an [`Answer`] (session id + SDP answer, all candidates included: no
//!   trickle needed), or a [`WhepError`] saying what went wrong (bad offer, incompatible codecs,
//!   offer too large, stream offline, server stopped, internal); the caller picks the HTTP
//!   status. Its work runs in a task of its own: a caller that gives up (the HTTP client went
//!   away) leaves a whole session behind, which ends at the connect deadline, never half a one.
//! * Media: each stream's samples are made into RTP payloads **once** (SPS/PPS in front of every
//!   IDR, Annex-B → RFC 6184 STAP-A/FU-A), and every session stamps its own header on them (SSRC,
//!   payload type, sequence number, timestamp offset) before SRTP. A session starts video at the
//!   next keyframe; video RTP timestamp = pts (dts + cts, ms) × 90, Opus RTP timestamp = pts × 48
//!   kept continuous; both derive from the publish's ms timeline, and the server's own RTCP
//!   sender reports map that timeline (not the packets' send times) to one wall clock, so
//!   players keep the tracks in sync even when audio leaves later (transcoding). A shard that
//!   falls behind misses units (counted) and its sessions' video waits for the next keyframe
//!   (the frames skipped meanwhile are counted per session in [`WebrtcStats::frames_skipped`]):
//!   nothing is buffered per session, and a slow shard never slows the others.
//! * A session ends — and its routing entries go — on [`WebrtcServer::close`] (WHEP `DELETE`),
//!   when ICE or DTLS fails, when the player closes (DTLS close_notify) or stops answering
//!   (no ICE traffic for 5 s → disconnected, 15 s more → failed), when it does not connect
//!   in time ([`WebrtcLimits::connect_timeout`], 10 s by default), and when the stream ends (the
//!   broadcast channel closes). [`WebrtcServer::sessions`] and [`WebrtcServer::total_sessions`]
//!   count the live ones (from their reservation on).
//! * [`WebrtcServer::shutdown`] closes every session (sending DTLS close_notify) and frees the
//!   ports.
//! * No trickle ICE is needed either way: the answer carries every server candidate, and the
//!   players' addresses are learnt from their connectivity checks (a WHEP `PATCH` can be
//!   answered 405).
//! * H.264 is answered on the offered profile that can decode the stream (see [`negotiate`]):
//!   Chromium 156 offers no High (`64…`), so a High stream is sent as `f4001f` (High 4:4:4, a
//!   decoder that contains High); an OpenH264-only player (Constrained Baseline) gets
//!   [`WhepError::Incompatible`] for a Main or High stream and should fall back to HLS.
//!
//! # Modules
//!
//! `server` (the API handle), `admission` (the limits and their counts), `peer` (offer → plan → peer connection), `routes` (the one
//! routing table), `shard` (the sans-IO shard loop) driven by `shard_task`, `net` (sockets, GSO),
//! `feed` (one feeder per stream), [`packetize`] (payloads once, headers per session), `report`
//! (RTCP sender reports), [`demux`], [`negotiate`], `config`.
//!
//! # Single-port demultiplexing
//!
//! Each session gets its own ICE username fragment. A datagram from a known remote address goes
//! to that address's session; anything else must be a STUN Binding request whose USERNAME
//! starts with one of our ufrags (`ours:theirs`), which also teaches us the address. See
//! [`demux`]. The server advertises host candidates only (its LAN and loopback addresses, or the
//! configured public IPs for NAT 1:1); players may use STUN/TURN servers from
//! [`WebrtcConfig::ice_servers`] ([`turn_rest_credentials`] makes coturn REST credentials).

mod admission;
mod config;
pub mod demux;
mod feed;
pub mod negotiate;
mod net;
pub mod packetize;
mod peer;
mod report;
mod routes;
mod server;
mod shard;
mod shard_task;

use bytes::Bytes;

pub use admission::{Reservation, WebrtcLimits};
pub use config::{IceServer, WebrtcConfig, turn_rest_credentials};
pub use negotiate::{ProfileLevelId, h264_fmtp};
pub use peer::MAX_OFFER_BYTES;
pub use server::WebrtcServer;

/// What a stream offers to WebRTC players.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamTracks {
    /// H.264 decoder configuration; `None` = audio only.
    pub video: Option<onair_media::AvcConfig>,
    /// Whether Opus audio ([`Sample::Opus`]) will be broadcast.
    pub audio: bool,
}

/// Media the hub broadcasts to every session of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// One H.264 access unit: AVCC (length-prefixed NAL units, the stream's
    /// `nal_length_size`), `dts`/`cts` in ms of the publish timeline, `keyframe` = IDR.
    Video(onair_media::Frame),
    /// One Opus packet (48 kHz clock): `pts_ms` on the same timeline as video, `samples` per
    /// channel in the packet (960 for 20 ms).
    Opus { data: Bytes, pts_ms: u64, samples: u32 },
}

/// Counters of the WebRTC server ([`WebrtcServer::stats`]), cumulative since it started.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebrtcStats {
    /// One entry per shard.
    pub shards: Vec<ShardStats>,
    /// Packets that belonged to no session (dropped).
    pub unrouted: u64,
    /// Samples the stream feeders skipped because they fell behind the hub's broadcast.
    pub lagged_samples: u64,
    /// `SO_SNDBUF` / `SO_RCVBUF` the kernel granted on the UDP socket, bytes.
    pub udp_send_buffer: usize,
    pub udp_recv_buffer: usize,
    /// Players refused by each limit: (label, count), every limit listed, labels
    /// `webrtc_sessions`, `webrtc_sessions_per_stream`, `webrtc_sessions_per_ip`,
    /// `webrtc_connecting`, `ice_tcp_connections` (the engine's `[limits]` keys).
    pub refused: Vec<(&'static str, u64)>,
    /// Sessions now not yet connected (their offer being answered, or ICE/DTLS not up yet).
    pub connecting: usize,
    /// ICE-TCP connections open now.
    pub ice_tcp_connections: usize,
    /// Video frames not sent to a session because it had fallen behind (missed units) and was
    /// skipped to the next keyframe, summed over sessions.
    pub frames_skipped: u64,
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardStats {
    /// Sessions it owns now.
    pub sessions: usize,
    /// UDP datagrams handed to the kernel, and their bytes.
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// UDP sends that failed (ENOBUFS, unreachable, …): those packets are lost.
    pub send_errors: u64,
    /// Times the UDP send buffer was full and the shard waited for room.
    pub send_blocked: u64,
    /// Successful send system calls (fewer than `packets_sent` when UDP GSO batches them).
    pub send_calls: u64,
    /// Packets dropped because an ICE-TCP connection's queue was full.
    pub tcp_dropped: u64,
    /// RTP packets its sessions sent (before SRTP).
    pub rtp_in: u64,
    /// Media units (frames, audio packets) it missed because its queue was full.
    pub media_dropped: u64,
    /// Datagrams from players dropped because its queue was full.
    pub net_dropped: u64,
    /// Time the shard task spent working rather than waiting.
    pub busy: std::time::Duration,
}

/// A WHEP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Identifies the session for [`WebrtcServer::close`] (the WHEP resource URL's last part).
    pub session_id: String,
    /// The SDP answer (`application/sdp`), with our candidates.
    pub sdp: String,
}

/// Why an offer was not answered: what went wrong, for the caller to map to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhepError {
    /// The offer cannot be parsed or used (not SDP, no ICE credentials or fingerprint, …).
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// Nothing in the offer can carry this stream: no H.264 profile that decodes it, no Opus
    /// when only audio was asked for, … (a player should fall back to HLS).
    #[error("incompatible offer: {0}")]
    Incompatible(String),
    /// The offer is longer than [`MAX_OFFER_BYTES`].
    #[error("the offer is {bytes} bytes, more than {limit}")]
    TooLarge { bytes: usize, limit: usize },
    /// The stream's media has ended (its broadcast channel is closed).
    #[error("the stream is offline")]
    Offline,
    /// The WebRTC server has stopped.
    #[error("the WebRTC server is not running")]
    Unavailable,
    /// A limit on sessions is reached (`limit` is its label, e.g. `webrtc_sessions_per_ip`, and
    /// `max` its value): nothing was made for this offer. The player may retry after
    /// `retry_after_s` seconds or play HLS.
    #[error("too many WebRTC sessions: the {limit} limit ({max}) is reached; play HLS or retry in {retry_after_s} s")]
    Busy { limit: &'static str, max: usize, retry_after_s: u64 },
    /// A failure inside the WebRTC stack.
    #[error("WebRTC: {0}")]
    Internal(String),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    #[error("cannot bind WebRTC UDP {addr}: {source}")]
    BindUdp { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot bind WebRTC ICE-TCP {addr}: {source}")]
    BindTcp { addr: std::net::SocketAddr, source: std::io::Error },
}
