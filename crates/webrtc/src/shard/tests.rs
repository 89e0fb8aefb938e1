//! The shard loop driven without sockets or a real clock: a real `rtc` player (offerer,
//! recvonly) and a shard exchange datagrams in memory, every datagram from the player goes
//! through the routing table as the UDP reader would send it, and time is a virtual `Instant`
//! moved by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::Packet;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::*;
use crate::StreamTracks;
use crate::admission::{Admission, WebrtcLimits};
use crate::feed::Subscribers;
use crate::packetize::tests::obs_capture;
use crate::packetize::{AudioTimeline, VideoPayloader};
use crate::peer::{IceCredentials, build_peer, plan};
use crate::report::ntp_us_of;

const OPUS_PT: u8 = 111;
const FEED: u64 = 9;

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// A player as Chromium offers: recvonly video (H.264 profiles) and audio (Opus), one host
/// candidate at `addr`.
fn player(addr: SocketAddr, now: Instant) -> RTCPeerConnection {
    let mut me = MediaEngine::default();
    me.register_codec(codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", OPUS_PT), RtpCodecKind::Audio)
        .unwrap();
    for (pt, pli) in [(102u8, "42e01f"), (106, "4d001f"), (110, "64001f")] {
        let fmtp = format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={pli}");
        me.register_codec(codec(MIME_TYPE_H264, 90000, 0, &fmtp, pt), RtpCodecKind::Video).unwrap();
    }
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(Registry::new())
        .build(now)
        .unwrap();
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
        pc.add_transceiver_from_kind(kind, Some(init)).unwrap();
    }
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().unwrap()).unwrap();
    pc
}

/// A shard with one session and its player, wired through the routing table.
struct Rig {
    now: Instant,
    admission: Arc<Admission>,
    routes: Arc<SharedRoutes>,
    subscribers: Arc<Subscribers>,
    shard: Shard,
    player: RTCPeerConnection,
    player_addr: SocketAddr,
    server_addr: SocketAddr,
    key: u64,
    /// Whether the player's datagrams reach the shard (false: it vanished).
    player_alive: bool,
    player_connected: bool,
    events: Vec<ShardEvent>,
    rtp: Vec<Packet>,
    /// Player datagrams the routing table found no session for.
    unrouted: usize,
}

impl Rig {
    fn new() -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ONAIR_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let now = Instant::now();
        let player_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let server_addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let mut player = player(player_addr, now);
        let offer = player.create_offer(None).unwrap();
        player.set_local_description(now, offer).unwrap();
        let offer_sdp = player.local_description().unwrap().sdp;

        let (avc, _) = obs_capture();
        let tracks = StreamTracks { video: Some(avc), audio: true };
        let plan = plan(&offer_sdp, &tracks).unwrap();
        let credentials = IceCredentials::random();
        let offer = RTCSessionDescription::offer(offer_sdp).unwrap();
        let built =
            build_peer(offer, &plan, &credentials, &[(TransportProtocol::UDP, server_addr)], "live", now).unwrap();
        player.set_remote_description(now, RTCSessionDescription::answer(built.sdp).unwrap()).unwrap();

        let routes = Arc::new(SharedRoutes::new(1));
        let key = routes.lock().add_session(0, "session-1", &credentials.ufrag).unwrap();
        let subscribers = Arc::new(Subscribers::new(1));
        subscribers.add(0);
        let admission = Arc::new(Admission::new(WebrtcLimits::default()));
        let reservation = admission.reserve("live", player_addr.ip()).unwrap();
        let mut shard = Shard::new(
            0,
            vec![vec![server_addr]],
            vec![],
            routes.clone(),
            Arc::default(),
            WebrtcLimits::default().connect_timeout,
        );
        let new = NewSession {
            key,
            id: "session-1".into(),
            reservation,
            pc: built.pc,
            video: built.video,
            audio: built.audio,
            feed: FEED,
            subscribers: subscribers.clone(),
        };
        shard.add(now, new);
        Rig {
            now,
            admission,
            routes,
            subscribers,
            shard,
            player,
            player_addr,
            server_addr,
            key,
            player_alive: true,
            player_connected: false,
            events: vec![],
            rtp: vec![],
            unrouted: 0,
        }
    }

    /// Moves every datagram across (the player's through the routing table, as the UDP reader
    /// does), until neither side has anything left to say.
    fn exchange(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(out) = self.player.poll_write() {
                moved = true;
                if !self.player_alive {
                    continue;
                }
                let data = out.message;
                let target = self.routes.lock().route(&data, self.player_addr);
                match target {
                    Some(target) => {
                        let net = NetIn::Udp { key: target.key, socket: 0, from: self.player_addr, data };
                        self.shard.handle_net(self.now, net);
                    }
                    None => self.unrouted += 1,
                }
            }
            for d in std::mem::take(self.shard.outbox()) {
                moved = true;
                assert_eq!((d.socket, d.to), (0, self.player_addr));
                let msg = TaggedBytesMut {
                    now: self.now,
                    transport: TransportContext {
                        local_addr: self.player_addr,
                        peer_addr: self.server_addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: d.data,
                };
                if self.player_alive {
                    let _ = self.player.handle_read(msg);
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = self.player.poll_read() {
                match message {
                    RTCMessage::RtpPacket(_, packet) => self.rtp.push(packet),
                    _ => {}
                }
            }
            while let Some(event) = self.player.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = event {
                    self.player_connected = true;
                }
            }
            self.events.extend(std::iter::from_fn(|| self.shard.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("the exchange does not settle");
    }

    /// Advances the virtual clock by `step`, firing both sides' timers.
    fn tick(&mut self, step: Duration) {
        self.now += step;
        let _ = self.player.handle_timeout(self.now);
        self.shard.handle_timeout(self.now);
        self.exchange();
    }

    fn connect(&mut self) {
        self.exchange();
        for _ in 0..400 {
            if self.player_connected && self.events.contains(&ShardEvent::Connected { key: self.key }) {
                return;
            }
            self.tick(Duration::from_millis(25));
        }
        panic!("not connected after 10 s: player {}, shard events {:?}", self.player_connected, self.events);
    }

    fn feed(&mut self, unit: MediaUnit) {
        self.feed_after(false, unit);
    }

    /// A unit; `gap`: the shard missed units before it.
    fn feed_after(&mut self, gap: bool, unit: MediaUnit) {
        self.shard.handle_feed(self.now, FeedMsg::Media { feed: FEED, gap, unit: Arc::new(unit) });
        self.exchange();
    }

    /// (sessions, connecting) under the limits.
    fn counted(&self) -> (usize, usize) {
        (self.admission.total(), self.admission.connecting())
    }

    fn ended(&self) -> Option<&'static str> {
        self.events.iter().find_map(|e| match e {
            ShardEvent::Ended { key, reason } if *key == self.key => Some(*reason),
            _ => None,
        })
    }
}

fn opus(timeline: &mut AudioTimeline, pts_ms: u64) -> MediaUnit {
    timeline.push(&Bytes::from_static(&[0xfc, 0xff, 0xfe]), pts_ms, 960).unwrap()
}

#[test]
fn a_session_connects_gets_shared_payloads_and_leaves_the_table_on_close() {
    let (avc, frames) = obs_capture();
    let mut video = VideoPayloader::new(&avc);
    let mut audio = AudioTimeline::default();
    let mut rig = Rig::new();
    let keyframe = video.push(&frames[0]).unwrap();

    // Media before the connection is up is not sent.
    assert_eq!(rig.counted(), (1, 1), "one session, connecting");
    rig.feed(keyframe.clone());
    assert!(rig.rtp.is_empty());
    // Routing: the player's first checks name our ufrag and teach the table its address; from
    // an address it never checked from, nothing (not even DTLS) finds the session.
    rig.connect();
    assert_eq!(rig.counted(), (1, 0), "connected: no longer connecting");
    assert_eq!(rig.unrouted, 0);
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(rig.routes.lock().route(&dtls, rig.player_addr).map(|t| t.key), Some(rig.key));
    assert_eq!(rig.routes.lock().route(&dtls, "127.0.0.1:50001".parse().unwrap()), None);

    // Connected mid-GOP: audio flows at once, video waits for the keyframe.
    rig.feed(opus(&mut audio, 400));
    rig.feed(video.push(&frames[10]).unwrap());
    assert_eq!(rig.rtp.len(), 1);
    assert_eq!(rig.rtp[0].header.payload_type, OPUS_PT);
    rig.rtp.clear();
    let unit = video.push(&frames[60]).unwrap();
    assert_eq!(unit.kind, Kind::Video { keyframe: true });
    rig.feed(unit.clone());
    // The player decrypts exactly the shared payloads, in order, under one SSRC, the marker on
    // the last.
    let payloads: Vec<&Bytes> = rig.rtp.iter().map(|p| &p.payload).collect();
    assert_eq!(payloads, unit.payloads.iter().collect::<Vec<_>>());
    assert!(rig.rtp.iter().all(|p| p.header.ssrc == rig.rtp[0].header.ssrc));
    assert!(rig.rtp.last().unwrap().header.marker);
    assert_eq!(rig.shard.stats.rtp_in.load(Relaxed), 1 + unit.payloads.len() as u64);

    // The player closes (DTLS close_notify): the session ends and leaves the one table.
    rig.player.close().unwrap();
    rig.exchange();
    assert_eq!(rig.ended(), Some("closed by the player (DTLS close_notify)"));
    assert_eq!(rig.shard.sessions(), 0);
    assert_eq!(rig.counted(), (0, 0), "its place is given back");
    assert!(rig.routes.lock().is_empty());
    assert!(!rig.subscribers.on(0));
    // Media of the stream goes nowhere now.
    rig.rtp.clear();
    rig.feed(video.push(&frames[61]).unwrap());
    assert!(rig.rtp.is_empty());
}

#[test]
fn a_vanished_player_fails_and_leaves_the_table() {
    let mut rig = Rig::new();
    rig.connect();
    rig.player_alive = false;
    for _ in 0..300 {
        rig.tick(Duration::from_millis(100));
        rig.shard.housekeeping(rig.now, Duration::from_secs(1_800_000_000));
        rig.events.extend(std::iter::from_fn(|| rig.shard.poll_event()));
        if rig.ended().is_some() {
            break;
        }
    }
    // No ICE traffic for 5 s → disconnected, 15 s more → failed.
    let reason = rig.ended().expect("the session did not end in 30 s");
    assert!(reason.contains("failed"), "{reason}");
    assert!(rig.routes.lock().is_empty());
    assert_eq!(rig.counted(), (0, 0));
    assert_eq!(rig.shard.sessions(), 0);
}

#[test]
fn a_player_that_never_connects_times_out() {
    let mut rig = Rig::new();
    let deadline = WebrtcLimits::default().connect_timeout;
    assert_eq!(deadline, Duration::from_secs(10));
    // Nothing from the player at all: the session holds its connecting place until the deadline.
    rig.player_alive = false;
    let start = rig.now;
    rig.now = start + deadline - Duration::from_millis(500);
    rig.shard.housekeeping(rig.now, Duration::from_secs(1_800_000_000));
    rig.events.extend(std::iter::from_fn(|| rig.shard.poll_event()));
    assert_eq!(rig.ended(), None);
    assert_eq!(rig.counted(), (1, 1));
    rig.now = start + deadline + Duration::from_secs(1);
    rig.shard.housekeeping(rig.now, Duration::from_secs(1_800_000_000));
    rig.events.extend(std::iter::from_fn(|| rig.shard.poll_event()));
    assert_eq!(rig.ended(), Some("did not connect before the connect deadline"));
    assert!(rig.routes.lock().is_empty());
    assert_eq!(rig.counted(), (0, 0), "its place is given back");
}

/// A session whose shard missed units (the feeder flags the gap) skips video to the next
/// keyframe, and every frame it skips is counted; audio goes on.
#[test]
fn a_session_behind_skips_to_the_next_keyframe_counted() {
    let (avc, frames) = obs_capture();
    let keys: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
    let mut video = VideoPayloader::new(&avc);
    let units: Vec<MediaUnit> = frames.iter().map(|f| video.push(f).unwrap()).collect();
    let mut rig = Rig::new();
    rig.connect();
    let skipped = |rig: &Rig| rig.shard.stats.frames_skipped.load(Relaxed);
    // Frames before the first keyframe are not "skipped": the session had not started.
    rig.feed(units[keys[0] + 1].clone());
    assert!(rig.rtp.is_empty());
    assert_eq!(skipped(&rig), 0);
    rig.feed(units[keys[1]].clone());
    rig.feed(units[keys[1] + 1].clone());
    assert!(!rig.rtp.is_empty());
    rig.rtp.clear();
    // Units were missed: the next ones up to the keyframe are skipped, one count each.
    rig.feed_after(true, units[keys[1] + 5].clone());
    for unit in &units[keys[1] + 6..keys[2]] {
        rig.feed(unit.clone());
    }
    assert!(rig.rtp.is_empty());
    assert_eq!(skipped(&rig), (keys[2] - keys[1] - 5) as u64);
    rig.feed(units[keys[2]].clone());
    assert!(!rig.rtp.is_empty(), "sends again from the keyframe");
    rig.feed(units[keys[2] + 1].clone());
    assert_eq!(skipped(&rig), (keys[2] - keys[1] - 5) as u64);
}

/// Audio and video captured at the same instant map to the same NTP time through the sender
/// reports the shard writes, even though the audio reaches the shard 150 ms after the video
/// (an AAC → Opus transcoder's delay) and the reports go out at an arbitrary moment. Virtual
/// monotonic clock and an injected wall clock: deterministic.
#[test]
fn sender_reports_put_audio_and_video_of_one_instant_at_one_ntp_time() {
    let (avc, frames) = obs_capture();
    let mut video = VideoPayloader::new(&avc);
    let mut audio = AudioTimeline::default();
    let mut rig = Rig::new();
    rig.connect();

    // 2 s of publish: video frames at their dts, Opus packets every 20 ms handed out 150 ms
    // after their pts; the shard sees each when the hub would hand it out.
    let start = rig.now;
    let frames = &frames[..60];
    let mut schedule: Vec<(Duration, MediaUnit)> = Vec::new();
    for f in frames {
        schedule.push((Duration::from_millis(f.dts), video.push(f).unwrap()));
    }
    for n in 0..100u64 {
        schedule.push((Duration::from_millis(n * 20 + 150), opus(&mut audio, n * 20)));
    }
    schedule.sort_by_key(|(at, _)| *at);
    let mut sent_video = Vec::new(); // (pts ms, RTP timestamp)
    let mut sent_audio = Vec::new();
    for (at, unit) in schedule {
        rig.now = start + at;
        let kind = unit.kind;
        let pts_ms = match kind {
            Kind::Video { .. } => u64::from(unit.timestamp / 90),
            Kind::Audio => u64::from(unit.timestamp / 48),
        };
        let before = rig.rtp.len();
        rig.feed(unit);
        if let Some(p) = rig.rtp.get(before) {
            match kind {
                Kind::Video { .. } => sent_video.push((pts_ms, p.header.timestamp)),
                Kind::Audio => sent_audio.push((pts_ms, p.header.timestamp)),
            }
        }
    }
    assert!(sent_video.len() >= 50 && sent_audio.len() >= 90, "{} {}", sent_video.len(), sent_audio.len());

    // Reports at a moment of no particular meaning, with a wall clock of our choosing.
    rig.now = start + Duration::from_millis(2_345);
    let wall = Duration::from_secs(1_800_000_000) + Duration::from_micros(123_456);
    rig.shard.housekeeping(rig.now, wall);
    rig.exchange();
    // The reports as the shard wrote them (before SRTCP), one per track.
    let reports = std::mem::take(&mut rig.shard.reports_written);
    assert_eq!(reports.len(), 2, "{reports:?}");
    let video_ssrc = rig.rtp.iter().find(|p| p.header.payload_type != OPUS_PT).unwrap().header.ssrc;
    let audio_ssrc = rig.rtp.iter().find(|p| p.header.payload_type == OPUS_PT).unwrap().header.ssrc;
    let report = |ssrc: u32| reports.iter().find(|r| r.ssrc == ssrc).unwrap();
    let (video_sr, audio_sr) = (report(video_ssrc), report(audio_ssrc));
    assert!(video_sr.packet_count > 0 && audio_sr.packet_count as usize == sent_audio.len());

    // Every video frame and the audio of the same pts (on the audio track's continuous
    // timeline: first packet + 48 per ms) map to one NTP time, to within a 90/48 kHz tick.
    let (audio_pts0, audio_ts0) = sent_audio[0];
    for (pts, video_ts) in &sent_video {
        let audio_ts = audio_ts0.wrapping_add(((*pts as i64 - audio_pts0 as i64) * 48) as u32);
        let v = ntp_us_of(video_sr, *video_ts, 90_000);
        let a = ntp_us_of(audio_sr, audio_ts, 48_000);
        assert!((v - a).abs() <= 50, "pts {pts} ms: video at {v} µs, audio at {a} µs (NTP)");
    }
    // And the mapping is the wall clock: when the reports left, the publish timeline (anchored
    // on the first frame, sent at its dts) stood at 2345 ms, and that instant is `wall`.
    let (first_pts, first_ts) = sent_video[0];
    let wall_us = i128::from(wall.as_secs() + 2_208_988_800) * 1_000_000 + i128::from(wall.subsec_micros());
    let expected = wall_us + (first_pts as i128 - 2_345) * 1000;
    assert!((ntp_us_of(video_sr, first_ts, 90_000) - expected).abs() <= 50);
}
