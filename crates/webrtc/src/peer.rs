//! Peer set-up: reading a WHEP offer into a plan (which codecs and payload types to send, see
//! [`crate::negotiate`]) and building the sans-IO peer connection that answers it (codecs, ICE
//! credentials and timeouts, NACK responder, host candidates, the SDP answer). Runs on a
//! blocking thread of the caller; the built peer is then handed to a shard.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_nack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::shared::TransportProtocol;

use crate::negotiate::{
    OPUS_FMTP, ProfileLevelId, choose_h264, choose_opus, h264_fmtp, offered_h264_profiles, summarize_offer,
};
use crate::packetize::RtpStream;
use crate::{StreamTracks, WhepError};

/// No ICE traffic for this long: disconnected.
pub(crate) const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// …and this much longer: failed, and the session is removed.
pub(crate) const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(15);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);
/// Longest offer accepted (a browser's is 3–10 KB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// What a session will send.
pub(crate) struct Plan {
    pub video: Option<crate::negotiate::H264Choice>,
    pub audio: Option<u8>,
}

pub(crate) fn plan(offer_sdp: &str, tracks: &StreamTracks) -> Result<Plan, WhepError> {
    if offer_sdp.len() > MAX_OFFER_BYTES {
        return Err(WhepError::TooLarge { bytes: offer_sdp.len(), limit: MAX_OFFER_BYTES });
    }
    let summary = summarize_offer(offer_sdp).map_err(WhepError::BadOffer)?;
    let video = match (&tracks.video, &summary.video) {
        (Some(avc), Some(offered)) => {
            let stream = ProfileLevelId::of(avc);
            Some(choose_h264(offered, stream).ok_or_else(|| {
                WhepError::Incompatible(format!(
                    "the stream is H.264 profile-level-id {} ({}); the offer's H.264 profiles ({}, packetization-mode=1 needed) cannot decode it",
                    stream.to_hex(),
                    h264_fmtp(avc),
                    offered_h264_profiles(offered)
                ))
            })?)
        }
        _ => None,
    };
    let audio = match (tracks.audio, &summary.audio) {
        (true, Some(offered)) => {
            let pt = choose_opus(offered);
            if pt.is_none() && video.is_none() {
                return Err(WhepError::Incompatible("the offer has no opus/48000/2".into()));
            }
            pt
        }
        _ => None,
    };
    if video.is_none() && audio.is_none() {
        let has = match (&tracks.video, tracks.audio) {
            (Some(_), true) => "video and audio",
            (Some(_), false) => "video only",
            (None, true) => "audio only",
            (None, false) => "no media yet",
        };
        return Err(WhepError::Incompatible(format!(
            "nothing to send: the stream has {has}, the offer asks for {}",
            match (summary.video.is_some(), summary.audio.is_some()) {
                (true, true) => "video and audio",
                (true, false) => "video only",
                _ => "audio only",
            }
        )));
    }
    Ok(Plan { video, audio })
}

pub(crate) struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    pub fn random() -> IceCredentials {
        // ice-chars are ALPHA / DIGIT / "+" / "/"; ufrag ≥ 4, pwd ≥ 22 characters (RFC 8839).
        IceCredentials { ufrag: random_string(16), pwd: random_string(32) }
    }
}

pub(crate) fn random_string(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// A sender of a built peer: its id in the peer connection and its RTP header state.
pub(crate) struct Sender {
    pub id: RTCRtpSenderId,
    pub rtp: RtpStream,
}

pub(crate) struct BuiltPeer {
    pub pc: RTCPeerConnection,
    pub sdp: String,
    pub video: Option<Sender>,
    pub audio: Option<Sender>,
}

fn internal(context: &str) -> impl Fn(rtc::shared::error::Error) -> WhepError + '_ {
    move |e| WhepError::Internal(format!("{context}: {e}"))
}

pub(crate) fn build_peer(
    offer: RTCSessionDescription,
    plan: &Plan,
    credentials: &IceCredentials,
    candidates: &[(TransportProtocol, SocketAddr)],
    stream: &str,
    now: Instant,
) -> Result<BuiltPeer, WhepError> {
    let video_codec = plan.video.as_ref().map(|v| RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: v.fmtp.clone(),
        rtcp_feedback: vec![],
    });
    let audio_codec = plan.audio.map(|_| RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    });

    let mut media_engine = MediaEngine::default();
    if let (Some(codec), Some(v)) = (&video_codec, &plan.video) {
        media_engine
            .register_codec(
                RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: v.payload_type },
                RtpCodecKind::Video,
            )
            .map_err(internal("register H.264"))?;
    }
    if let (Some(codec), Some(pt)) = (&audio_codec, plan.audio) {
        media_engine
            .register_codec(RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: pt }, RtpCodecKind::Audio)
            .map_err(internal("register Opus"))?;
    }
    // NACK responder (retransmissions). RTCP sender reports are ours (`crate::report`):
    // rtc's report interceptor maps RTP time to the send time of the last packet, which would
    // turn any processing delay between the tracks (audio transcoding) into an A/V offset.
    let registry = configure_nack(Registry::new(), &mut media_engine);

    let mut network_types = vec![NetworkType::Udp4, NetworkType::Udp6];
    if candidates.iter().any(|(p, _)| *p == TransportProtocol::TCP) {
        network_types.extend([NetworkType::Tcp4, NetworkType::Tcp6]);
    }
    let settings = SettingEngineBuilder::new()
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
        // Players' mDNS (.local) candidates are not resolved: their checks reach us first and
        // teach us their address (peer-reflexive), which is all a server with host
        // candidates needs. Queries would go out of the shared socket otherwise.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(network_types)
        .with_ice_timeouts(Some(ICE_DISCONNECTED_TIMEOUT), Some(ICE_FAILED_TIMEOUT), Some(ICE_KEEPALIVE))
        .build();

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal("peer connection"))?;

    let mut add = |kind: RtpCodecKind, codec: RTCRtpCodec, name: &str| -> Result<(RTCRtpSenderId, u32), WhepError> {
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            format!("onair-{stream}"),
            format!("onair-{name}"),
            name.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec,
                ..Default::default()
            }],
        );
        Ok((pc.add_track(track).map_err(internal("add track"))?, ssrc))
    };
    let video = video_codec.map(|c| add(RtpCodecKind::Video, c, "video")).transpose()?;
    let audio = audio_codec.map(|c| add(RtpCodecKind::Audio, c, "audio")).transpose()?;

    pc.set_remote_description(now, offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
    for (protocol, addr) in candidates {
        let tcp = *protocol == TransportProtocol::TCP;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: if tcp { "tcp" } else { "udp" }.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type: if tcp { TcpType::Passive } else { TcpType::Unspecified },
        }
        .new_candidate_host()
        .map_err(internal("host candidate"))?;
        let init = RTCIceCandidate::from(&candidate).to_json().map_err(internal("host candidate"))?;
        pc.add_local_candidate(init).map_err(internal("add host candidate"))?;
    }
    let answer = pc.create_answer(None).map_err(|e| WhepError::BadOffer(format!("cannot answer: {e}")))?;
    pc.set_local_description(now, answer).map_err(internal("set local description"))?;
    let sdp =
        pc.local_description().map(|d| d.sdp).ok_or_else(|| WhepError::Internal("no local description".into()))?;

    // The payload type each sender was given (the offer's), stamped on every packet.
    let mut negotiated = |sender: Option<(RTCRtpSenderId, u32)>, what: &str| -> Result<Option<Sender>, WhepError> {
        let Some((id, ssrc)) = sender else { return Ok(None) };
        let pt = pc
            .rtp_sender(id)
            .and_then(|mut s| s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type))
            .ok_or_else(|| WhepError::Incompatible(format!("{what} was not negotiated")))?;
        Ok(Some(Sender { id, rtp: RtpStream::new(pt, ssrc) }))
    };
    let video = negotiated(video, "H.264 video")?;
    let audio = negotiated(audio, "Opus audio")?;
    Ok(BuiltPeer { pc, sdp, video, audio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_credentials_are_ice_chars() {
        let c = IceCredentials::random();
        assert_eq!(c.ufrag.len(), 16);
        assert_eq!(c.pwd.len(), 32);
        assert!(c.ufrag.chars().chain(c.pwd.chars()).all(|ch| ch.is_ascii_alphanumeric()));
        assert_ne!(IceCredentials::random().ufrag, c.ufrag);
    }
}
