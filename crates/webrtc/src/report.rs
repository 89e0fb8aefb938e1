//! RTCP sender reports: what lets a player lip-sync audio and video.
//!
//! A report maps one RTP timestamp of a track to one NTP (wall-clock) instant. Both tracks of a
//! session derive their RTP timestamps from the same publish timeline (ms since the publish
//! started, see [`crate::packetize`]), so the reports take the RTP time from that timeline too:
//! a session keeps one [`MediaAnchor`] (this wall-clock instant is that media instant), and
//! every report of every track reads "now" on it. The reports of audio and video then agree on
//! which media instant is "now", however late each track's packets left (an audio transcoder's
//! delay does not become an A/V offset, as it would if the RTP time were taken from the send
//! time of the last packet, which is what rtc's report interceptor does). Pure: the monotonic
//! `now` and the wall clock are passed in.

use std::time::{Duration, Instant};

use rtc::rtcp::sender_report::SenderReport;

/// Re-anchor when the publish timeline and the wall clock disagree by more than this (a stall or
/// a jump in the publish).
const REANCHOR_MS: i64 = 1000;

/// Wall-clock instant `wall` corresponds to `media_ms` of the publish timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MediaAnchor {
    pub wall: Instant,
    pub media_ms: u64,
}

impl MediaAnchor {
    /// The publish timeline at `now`, in microseconds.
    pub fn media_us(&self, now: Instant) -> u64 {
        self.media_ms.saturating_mul(1000).saturating_add(now.saturating_duration_since(self.wall).as_micros() as u64)
    }

    /// Keeps the anchor while `media_ms` arriving at `now` agrees with it; else a new anchor.
    pub fn follow(anchor: Option<MediaAnchor>, now: Instant, media_ms: u64) -> MediaAnchor {
        match anchor {
            Some(a) if (media_ms as i64 - (a.media_us(now) / 1000) as i64).abs() <= REANCHOR_MS => a,
            _ => MediaAnchor { wall: now, media_ms },
        }
    }
}

/// What the sender reports of one outgoing track need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrTrack {
    pub ssrc: u32,
    pub ts_offset: u32,
    pub clock_rate: u32,
    /// Packets and payload octets sent so far (wrapping, as RTCP counts them).
    pub packets: u32,
    pub octets: u32,
}

impl SrTrack {
    pub fn new(ssrc: u32, ts_offset: u32, clock_rate: u32) -> SrTrack {
        SrTrack { ssrc, ts_offset, clock_rate, packets: 0, octets: 0 }
    }

    pub fn count(&mut self, packets: usize, octets: usize) {
        self.packets = self.packets.wrapping_add(packets as u32);
        self.octets = self.octets.wrapping_add(octets as u32);
    }

    /// The report at `now` (monotonic) = `since_unix_epoch` (wall clock); `None` before the
    /// track has sent anything.
    pub fn report(&self, anchor: &MediaAnchor, now: Instant, since_unix_epoch: Duration) -> Option<SenderReport> {
        (self.packets > 0).then(|| SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp_time(since_unix_epoch),
            rtp_time: rtp_time(self.ts_offset, self.clock_rate, anchor.media_us(now)),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// RTP timestamp of publish time `media_us` for a track.
pub(crate) fn rtp_time(ts_offset: u32, clock_rate: u32, media_us: u64) -> u32 {
    // Wrapping modulo 2^32, as the packets' timestamps do.
    ts_offset.wrapping_add((u128::from(media_us) * u128::from(clock_rate) / 1_000_000) as u32)
}

/// NTP timestamp (RFC 3550 §4: seconds since 1900 in the high 32 bits, fraction in the low).
pub(crate) fn ntp_time(since_unix_epoch: Duration) -> u64 {
    const UNIX_TO_NTP_SECS: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs().wrapping_add(UNIX_TO_NTP_SECS);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The NTP time (in µs since 1900) a packet with RTP timestamp `rtp` maps to by `report`: what
/// a player computes to line the tracks up.
#[cfg(test)]
pub(crate) fn ntp_us_of(report: &SenderReport, rtp: u32, clock_rate: u32) -> i128 {
    let sr_us =
        i128::from(report.ntp_time >> 32) * 1_000_000 + ((i128::from(report.ntp_time & 0xffff_ffff) * 1_000_000) >> 32);
    let delta = i128::from(rtp.wrapping_sub(report.rtp_time) as i32);
    sr_us + delta * 1_000_000 / i128::from(clock_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_and_rtp_times() {
        assert_eq!(ntp_time(Duration::ZERO), 2_208_988_800u64 << 32);
        assert_eq!(ntp_time(Duration::from_millis(1500)), (2_208_988_801u64 << 32) | (1u64 << 31));
        assert_eq!(rtp_time(10, 90_000, 1_000_000), 90_010);
        assert_eq!(rtp_time(u32::MAX, 48_000, 20_000), 959);
        // 13.3 h at 90 kHz wraps.
        assert_eq!(rtp_time(0, 90_000, 47_721_858_845), ((47_721_858_845u128 * 9 / 100) % (1u128 << 32)) as u32);
    }

    #[test]
    fn the_anchor_follows_the_publish_timeline() {
        let t0 = Instant::now();
        let a = MediaAnchor::follow(None, t0, 5_000);
        assert_eq!(a, MediaAnchor { wall: t0, media_ms: 5_000 });
        assert_eq!(a.media_us(t0 + Duration::from_millis(250)), 5_250_000);
        // Packets a little late or early (jitter, B-frames, transcoding) keep the anchor...
        assert_eq!(MediaAnchor::follow(Some(a), t0 + Duration::from_millis(2_000), 6_600), a);
        assert_eq!(MediaAnchor::follow(Some(a), t0 + Duration::from_millis(2_000), 7_900), a);
        // ...a stall or a jump of more than a second moves it.
        let b = MediaAnchor::follow(Some(a), t0 + Duration::from_millis(5_000), 6_000);
        assert_eq!(b.media_ms, 6_000);
    }
}
