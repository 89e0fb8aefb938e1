//! What to answer: reading a WHEP offer and choosing the H.264 and Opus payload types to send.
//!
//! Pure functions over the offer text, so every rule here has a unit test.
//!
//! H.264 profiles are compared the way RFC 6184 and the browsers do: by `profile_idc` plus the
//! constraint flags (the first two bytes of `profile-level-id`), never by level. A stream can be
//! sent on an offered payload type whose decoder can decode it: the same profile first, otherwise
//! the closest profile that contains it (Constrained Baseline ⊂ Main ⊂ High ⊂ High 10 ⊂
//! High 4:2:2 ⊂ High 4:4:4 Predictive). Constrained High (`640c…`, what Safari and hardware
//! decoders offer) is treated as High: every browser that offers it decodes full High.

use std::io::Cursor;

use onair_media::AvcConfig;
use rtc::sdp::description::session::SessionDescription;

/// The three bytes of an H.264 `profile-level-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileLevelId {
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, …).
    pub profile_idc: u8,
    /// The constraint flags byte (`constraint_set0_flag` is the top bit).
    pub constraints: u8,
    /// `level_idc` (31 = level 3.1).
    pub level_idc: u8,
}

impl ProfileLevelId {
    /// The profile, constraint flags and level of a stream's AVCDecoderConfigurationRecord.
    pub fn of(avc: &AvcConfig) -> ProfileLevelId {
        ProfileLevelId { profile_idc: avc.profile_idc, constraints: avc.profile_compat, level_idc: avc.level_idc }
    }

    /// Parses the six hex digits of a `profile-level-id` value.
    pub fn parse(hex: &str) -> Option<ProfileLevelId> {
        let hex = hex.trim();
        if hex.len() != 6 || !hex.is_ascii() {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(ProfileLevelId { profile_idc: byte(0)?, constraints: byte(2)?, level_idc: byte(4)? })
    }

    /// Six lowercase hex digits, e.g. `64001f`.
    pub fn to_hex(self) -> String {
        format!("{:02x}{:02x}{:02x}", self.profile_idc, self.constraints, self.level_idc)
    }

    fn family(self) -> Family {
        let set = |bit: u8| self.constraints & (0x80 >> bit) != 0;
        match self.profile_idc {
            0x42 if set(1) => Family::ConstrainedBaseline,
            0x42 => Family::Baseline,
            0x4d if set(0) => Family::ConstrainedBaseline,
            0x4d => Family::Main,
            0x58 if set(0) && set(1) => Family::ConstrainedBaseline,
            0x58 if set(0) => Family::Baseline,
            0x64 => Family::High,
            0x6e => Family::High10,
            0x7a => Family::High422,
            0xf4 | 0x2c => Family::High444,
            other => Family::Other(other),
        }
    }
}

/// H.264 profiles by what their decoders can decode; the order is the containment order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    ConstrainedBaseline,
    /// Baseline with FMO/ASO allowed: only a Baseline decoder is strictly required; the
    /// encoders that write it (without `constraint_set1`) do not use those tools, so it is sent
    /// to Constrained Baseline and Main-or-higher decoders as a last resort.
    Baseline,
    Main,
    High,
    High10,
    High422,
    High444,
    Other(u8),
}

impl Family {
    /// Position in the containment chain (Baseline is off the chain).
    fn rank(self) -> Option<u8> {
        match self {
            Family::ConstrainedBaseline => Some(0),
            Family::Main => Some(1),
            Family::High => Some(2),
            Family::High10 => Some(3),
            Family::High422 => Some(4),
            Family::High444 => Some(5),
            Family::Baseline | Family::Other(_) => None,
        }
    }
}

/// How well an offered profile `decoder` fits a stream of profile `stream`: `None` when its
/// decoder cannot be expected to decode the stream, else a cost (0 = the very same profile
/// bytes; lower is better).
fn fit(decoder: ProfileLevelId, stream: ProfileLevelId) -> Option<u32> {
    let same_flags = u32::from(decoder.constraints != stream.constraints);
    let (d, s) = (decoder.family(), stream.family());
    if d == s {
        return Some(same_flags);
    }
    match (d.rank(), s) {
        // Plain Baseline: Constrained Baseline, then Main and up (see `Family::Baseline`).
        (Some(rank), Family::Baseline) => Some(20 + 2 * u32::from(rank) + same_flags),
        (Some(d_rank), _) => {
            let s_rank = s.rank()?;
            (d_rank > s_rank).then(|| 2 * u32::from(d_rank - s_rank) + same_flags)
        }
        (None, _) => None,
    }
}

/// The `a=fmtp` line (value part) OnAir registers for an H.264 profile:
/// `level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=<hex>`.
pub fn h264_fmtp_for(profile: ProfileLevelId) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}", profile.to_hex())
}

/// The H.264 `a=fmtp` value describing a stream exactly, built from its
/// AVCDecoderConfigurationRecord: `profile-level-id` = hex of `profile_idc`, the constraint
/// flags and `level_idc`; packetization mode 1 (FU-A/STAP-A); level asymmetry allowed.
pub fn h264_fmtp(avc: &AvcConfig) -> String {
    h264_fmtp_for(ProfileLevelId::of(avc))
}

/// The Opus `a=fmtp` value OnAir registers.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// One `a=rtpmap` entry of an offered media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    pub payload_type: u8,
    /// Encoding name as written (`H264`, `opus`, …).
    pub name: String,
    pub clock_rate: u32,
    /// Channel count for audio (empty when absent).
    pub channels: String,
    /// The `a=fmtp` value, verbatim (empty when absent).
    pub fmtp: String,
}

impl OfferedCodec {
    fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }
}

/// The media sections of an offer that matter to a recvonly WHEP player.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// Codecs of the first accepted (`port != 0`, or `a=bundle-only`) video section, in offer
    /// order.
    pub video: Option<Vec<OfferedCodec>>,
    /// Codecs of the first accepted audio section, in offer order.
    pub audio: Option<Vec<OfferedCodec>>,
}

/// Parses an SDP offer far enough to choose codecs. Errors are human-readable reasons for a
/// 400 answer.
pub fn summarize_offer(sdp: &str) -> Result<OfferSummary, String> {
    if sdp.trim().is_empty() {
        return Err("empty SDP".into());
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).map_err(|e| format!("SDP: {e}"))?;
    let mut summary = OfferSummary::default();
    for media in &parsed.media_descriptions {
        let kind = media.media_name.media.to_ascii_lowercase();
        let slot = match kind.as_str() {
            "video" => &mut summary.video,
            "audio" => &mut summary.audio,
            _ => continue,
        };
        // Port 0 rejects a section, except with `a=bundle-only` (JSEP max-bundle: every section
        // after the first of a BUNDLE group is offered on port 0; GStreamer's webrtcbin does this).
        let rejected = media.media_name.port.value == 0 && !media.has_attribute("bundle-only");
        if slot.is_some() || rejected {
            continue;
        }
        let mut by_pt = media.codecs();
        let mut codecs = Vec::new();
        for format in &media.media_name.formats {
            let Ok(pt) = format.parse::<u8>() else { continue };
            if let Some(c) = by_pt.remove(&pt) {
                codecs.push(OfferedCodec {
                    payload_type: pt,
                    name: c.name,
                    clock_rate: c.clock_rate,
                    channels: c.encoding_parameters,
                    fmtp: c.fmtp,
                });
            }
        }
        *slot = Some(codecs);
    }
    if summary.video.is_none() && summary.audio.is_none() {
        return Err("the offer has no audio or video section".into());
    }
    Ok(summary)
}

/// The offered H.264 payload type chosen for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Choice {
    pub payload_type: u8,
    /// The offered profile (its first two bytes are what the answer echoes).
    pub offered: ProfileLevelId,
    /// The `a=fmtp` value to register: the offered profile and constraint bytes (so it matches
    /// the offer exactly) with the stream's level.
    pub fmtp: String,
}

/// Picks the offered H.264 payload type (packetization mode 1) whose decoder fits the stream
/// best; `None` when no offered H.264 profile can decode it.
pub fn choose_h264(offered: &[OfferedCodec], stream: ProfileLevelId) -> Option<H264Choice> {
    let mut best: Option<(u32, &OfferedCodec, ProfileLevelId)> = None;
    for codec in offered {
        if !codec.name.eq_ignore_ascii_case("h264") || codec.clock_rate != 90_000 {
            continue;
        }
        if codec.fmtp_param("packetization-mode") != Some("1") {
            continue;
        }
        // RFC 6184: an absent profile-level-id means 420010 (Baseline, level 1).
        let profile = match codec.fmtp_param("profile-level-id") {
            Some(hex) => match ProfileLevelId::parse(hex) {
                Some(p) => p,
                None => continue,
            },
            None => ProfileLevelId { profile_idc: 0x42, constraints: 0, level_idc: 0x0a },
        };
        let Some(cost) = fit(profile, stream) else { continue };
        if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
            best = Some((cost, codec, profile));
        }
    }
    best.map(|(_, codec, offered)| H264Choice {
        payload_type: codec.payload_type,
        offered,
        fmtp: h264_fmtp_for(ProfileLevelId { level_idc: stream.level_idc, ..offered }),
    })
}

/// The offered Opus 48000/2 payload type, if any.
pub fn choose_opus(offered: &[OfferedCodec]) -> Option<u8> {
    offered
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48_000 && c.channels.trim() == "2")
        .map(|c| c.payload_type)
}

/// The H.264 profiles an offer lists (for error messages), e.g. `42e01f, 4d001f`.
pub fn offered_h264_profiles(offered: &[OfferedCodec]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for codec in offered.iter().filter(|c| c.name.eq_ignore_ascii_case("h264")) {
        let p = codec.fmtp_param("profile-level-id").unwrap_or("420010").to_ascii_lowercase();
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    if seen.is_empty() { "none".into() } else { seen.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plid(hex: &str) -> ProfileLevelId {
        ProfileLevelId::parse(hex).unwrap()
    }

    fn h264(pt: u8, fmtp: &str) -> OfferedCodec {
        OfferedCodec {
            payload_type: pt,
            name: "H264".into(),
            clock_rate: 90_000,
            channels: String::new(),
            fmtp: fmtp.into(),
        }
    }

    /// The H.264 entries Chromium 156 (Debian) puts in a recvonly offer, in its order.
    fn chromium_h264() -> Vec<OfferedCodec> {
        vec![
            h264(102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
            h264(104, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"),
            h264(108, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
            h264(114, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"),
            h264(116, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"),
            h264(39, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f"),
            h264(41, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=f4001f"),
            h264(43, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=f4001f"),
        ]
    }

    fn avc_record(profile: u8, compat: u8, level: u8) -> AvcConfig {
        // A real 320x180 SPS/PPS pair would be needed by AvcConfig::parse; build the struct.
        AvcConfig {
            record: bytes::Bytes::new(),
            profile_idc: profile,
            profile_compat: compat,
            level_idc: level,
            nal_length_size: 4,
            sps: vec![],
            pps: vec![],
            width: 320,
            height: 180,
            fps: None,
        }
    }

    #[test]
    fn fmtp_builder_uses_the_record_bytes() {
        assert_eq!(
            h264_fmtp(&avc_record(0x64, 0x00, 0x1f)),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"
        );
        assert_eq!(
            h264_fmtp(&avc_record(0x4d, 0x40, 0x1e)),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d401e"
        );
        assert_eq!(
            h264_fmtp(&avc_record(0x42, 0xc0, 0x0d)),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c00d"
        );
    }

    #[test]
    fn profile_level_id_parse() {
        assert_eq!(plid("640C1F"), ProfileLevelId { profile_idc: 0x64, constraints: 0x0c, level_idc: 0x1f });
        assert_eq!(ProfileLevelId::parse("64001"), None);
        assert_eq!(ProfileLevelId::parse("zz001f"), None);
        assert_eq!(ProfileLevelId::parse("é4001f"), None);
        assert_eq!(plid("42e01f").to_hex(), "42e01f");
    }

    #[test]
    fn same_profile_wins_and_mode_0_is_skipped() {
        // x264 Main writes constraint_set1 (4d40..); Chromium offers 4d00..: same profile.
        let c = choose_h264(&chromium_h264(), plid("4d401e")).unwrap();
        assert_eq!(c.payload_type, 116);
        assert_eq!(c.fmtp, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001e");
        // x264 baseline is Constrained Baseline (42c0..): 42e01f, not 42001f.
        assert_eq!(choose_h264(&chromium_h264(), plid("42c015")).unwrap().payload_type, 108);
        // Plain Baseline goes to plain Baseline.
        assert_eq!(choose_h264(&chromium_h264(), plid("420015")).unwrap().payload_type, 102);
    }

    #[test]
    fn high_goes_to_the_closest_superset() {
        // Chromium 156 offers no 64....: High 4:4:4 Predictive is the decoder that contains High.
        let c = choose_h264(&chromium_h264(), plid("64001f")).unwrap();
        assert_eq!((c.payload_type, c.offered.profile_idc), (41, 0xf4));
        // Safari offers Constrained High 640c1f: taken as High.
        let safari = vec![
            h264(96, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f"),
            h264(98, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
        ];
        let c = choose_h264(&safari, plid("640028")).unwrap();
        assert_eq!(c.payload_type, 96);
        assert_eq!(c.fmtp, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c28");
        // Main on a High decoder when there is no Main.
        assert_eq!(choose_h264(&safari, plid("4d401f")).unwrap().payload_type, 96);
    }

    #[test]
    fn nothing_that_can_decode_is_none() {
        let firefox = vec![
            h264(126, "profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1"),
            h264(97, "profile-level-id=42e01f;level-asymmetry-allowed=1"),
        ];
        assert_eq!(choose_h264(&firefox, plid("64001f")), None);
        assert_eq!(choose_h264(&firefox, plid("4d401f")), None);
        assert_eq!(choose_h264(&firefox, plid("42c01f")).unwrap().payload_type, 126);
        assert_eq!(offered_h264_profiles(&firefox), "42e01f");
        assert_eq!(choose_h264(&[], plid("42c01f")), None);
    }

    #[test]
    fn opus_needs_48k_stereo() {
        let opus = |pt: u8, ch: &str| OfferedCodec {
            payload_type: pt,
            name: "opus".into(),
            clock_rate: 48_000,
            channels: ch.into(),
            fmtp: "minptime=10;useinbandfec=1".into(),
        };
        assert_eq!(choose_opus(&[opus(111, "2")]), Some(111));
        assert_eq!(choose_opus(&[opus(111, "1")]), None);
    }

    #[test]
    fn summary_of_a_chromium_offer() {
        let sdp = include_str!("../tests/data/chromium156-recvonly-offer.sdp");
        let s = summarize_offer(sdp).unwrap();
        let video = s.video.unwrap();
        assert_eq!(video.first().unwrap().name, "VP8");
        assert_eq!(choose_h264(&video, plid("4d401f")).unwrap().payload_type, 116);
        assert_eq!(choose_opus(&s.audio.unwrap()), Some(111));
    }

    #[test]
    fn bundle_only_sections_on_port_0_count() {
        // GStreamer webrtcbin (1.22, bundle-policy max-bundle): the audio section is bundle-only
        // on port 0, with an upper-case OPUS. A real rejection (port 0 alone) still does not count.
        let head = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0 audio1\r\n\
                    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=recvonly\r\n\
                    a=rtpmap:102 H264/90000\r\n\
                    a=fmtp:102 packetization-mode=1;level-asymmetry-allowed=1;profile-level-id=42e01f\r\n\
                    m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:audio1\r\na=recvonly\r\n";
        let offer = format!("{head}a=bundle-only\r\na=rtpmap:111 OPUS/48000/2\r\n");
        let s = summarize_offer(&offer).unwrap();
        assert_eq!(choose_h264(&s.video.unwrap(), plid("42c01e")).unwrap().payload_type, 102);
        assert_eq!(choose_opus(&s.audio.unwrap()), Some(111));
        let rejected = format!("{head}a=rtpmap:111 opus/48000/2\r\n");
        assert_eq!(summarize_offer(&rejected).unwrap().audio, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in ["", "hello", "v=0\r\n", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "\u{0}\u{1}\u{2}"] {
            assert!(summarize_offer(bad).is_err(), "{bad:?}");
        }
    }
}
