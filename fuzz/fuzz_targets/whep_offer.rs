//! The WHEP offer path: arbitrary bytes as an SDP offer, through OnAir's offer summary and codec
//! choice, and (first byte odd) through a real `WebrtcServer::answer` (rtc's SDP parser, peer
//! set-up), plus the single-port demux on the same bytes as a datagram.
//!
//! Property: never a panic; a successful answer is a session that `close` removes again.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onair_webrtc::negotiate::{self, ProfileLevelId};
use onair_webrtc::{StreamTracks, WebrtcConfig, WebrtcServer, demux};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
});

static SERVER: LazyLock<WebrtcServer> = LazyLock::new(|| {
    RT.block_on(WebrtcServer::start(WebrtcConfig {
        udp: "127.0.0.1:0".parse().unwrap(),
        tcp: None,
        ..WebrtcConfig::default()
    }))
    .expect("WebRTC server on loopback")
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if demux::is_stun(rest) {
        let _ = demux::stun_local_ufrag(rest);
    }
    let Ok(sdp) = std::str::from_utf8(rest) else { return };
    let avc = &onair_fuzz::REAL.avc;
    if let Ok(summary) = negotiate::summarize_offer(sdp) {
        if let Some(video) = &summary.video {
            let _ = negotiate::choose_h264(video, ProfileLevelId::of(avc));
            let _ = negotiate::offered_h264_profiles(video);
        }
        if let Some(audio) = &summary.audio {
            let _ = negotiate::choose_opus(audio);
        }
    }
    if mode & 1 == 1 {
        let (tx, rx) = tokio::sync::broadcast::channel(4);
        let tracks = StreamTracks { video: (mode & 2 == 0).then(|| avc.clone()), audio: mode & 4 == 0 };
        // Loopback has no per-IP limit, and every answered session is closed at once.
        let place = SERVER.reserve("fuzz", std::net::Ipv4Addr::LOCALHOST.into()).expect("a place under the limits");
        if let Ok(answer) = RT.block_on(SERVER.answer(place, sdp, &tracks, rx)) {
            assert!(RT.block_on(SERVER.close(&answer.session_id)), "an answered session can be closed");
        }
        drop(tx);
    }
});
