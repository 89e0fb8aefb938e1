//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).

use bytes::Bytes;

use crate::bits::BitReader;
use crate::{MediaError, Result};

const WHAT: &str = "AudioSpecificConfig";

/// Sampling frequencies of `samplingFrequencyIndex` 0..=12 (13 and 14 are reserved,
/// 15 means an explicit 24-bit rate follows).
pub const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Audio object type of AAC Main.
pub const AOT_AAC_MAIN: u8 = 1;
/// Audio object type of AAC-LC, the usual one.
pub const AOT_AAC_LC: u8 = 2;
/// Audio object type of SBR (HE-AAC v1 when signalled explicitly).
pub const AOT_SBR: u8 = 5;
/// Audio object type of PS (HE-AAC v2 when signalled explicitly).
pub const AOT_PS: u8 = 29;

/// An AAC decoder configuration, as carried by the FLV/RTMP "sequence header" (AAC packet
/// type 0) and by the MP4 `esds` box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The raw AudioSpecificConfig, exactly as received.
    pub asc: Bytes,
    /// The audio object type as first signalled (2 = AAC-LC; 5 or 29 for explicitly
    /// signalled HE-AAC v1/v2).
    pub object_type: u8,
    /// The (core) sampling rate in Hz: the rate at which [`samples_per_frame`] samples make
    /// up one frame. For explicitly signalled HE-AAC this is the AAC core's rate, not the
    /// SBR output rate.
    ///
    /// [`samples_per_frame`]: AacConfig::samples_per_frame
    pub sample_rate: u32,
    /// Number of output channels (from `channelConfiguration`, or counted in the program
    /// config element when that is 0).
    pub channels: u8,
}

/// What [`parse_asc`] finds beyond the public fields.
struct Parsed {
    config: AacConfig,
    samples_per_frame: u32,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig.
    ///
    /// Only the leading fields are required; a GASpecificConfig that ends early is accepted
    /// unless its program config element is needed (`channelConfiguration` 0). Anything after
    /// (e.g. a backward-compatible SBR sync extension) is ignored.
    pub fn parse(asc: &[u8]) -> Result<Self> {
        parse_asc(asc).map(|p| p.config)
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2` for AAC-LC.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// PCM samples (per channel, at [`sample_rate`](Self::sample_rate)) in one AAC frame:
    /// 1024, or 960 when the GASpecificConfig's `frameLengthFlag` is set
    /// (480/512 for AAC-LD).
    pub fn samples_per_frame(&self) -> u32 {
        parse_asc(&self.asc).map_or(1024, |p| p.samples_per_frame)
    }

    /// Duration of one frame in milliseconds, `1000 * samples_per_frame / sample_rate`
    /// (e.g. 21.33… for 1024 samples at 48 kHz).
    pub fn frame_duration_ms(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        f64::from(self.samples_per_frame()) * 1000.0 / f64::from(self.sample_rate)
    }
}

fn invalid(reason: impl Into<String>) -> MediaError {
    MediaError::Invalid { what: WHAT, reason: reason.into() }
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8> {
    let aot = r.read_u8(5)?;
    if aot == 31 {
        return Ok(32 + r.read_u8(6)?);
    }
    Ok(aot)
}

fn read_sample_rate(r: &mut BitReader<'_>) -> Result<u32> {
    let index = r.read_u8(4)?;
    match index {
        0xf => match r.read_bits(24)? {
            0 => Err(invalid("explicit sampling frequency 0")),
            rate => Ok(rate),
        },
        13 | 14 => Err(invalid(format!("reserved samplingFrequencyIndex {index}"))),
        _ => Ok(SAMPLE_RATES[usize::from(index)]),
    }
}

/// Object types whose specific config is a GASpecificConfig.
fn is_general_audio(aot: u8) -> bool {
    matches!(aot, 1..=4 | 6 | 7 | 17 | 19..=23)
}

fn parse_asc(asc: &[u8]) -> Result<Parsed> {
    let mut r = BitReader::new(asc, WHAT);
    let object_type = read_object_type(&mut r)?;
    if object_type == 0 {
        return Err(invalid("audio object type 0 (null)"));
    }
    let sample_rate = read_sample_rate(&mut r)?;
    let channel_configuration = r.read_u8(4)?;

    let mut core_type = object_type;
    if object_type == AOT_SBR || object_type == AOT_PS {
        let _extension_sample_rate = read_sample_rate(&mut r)?;
        core_type = read_object_type(&mut r)?;
        if core_type == 22 {
            let _extension_channel_configuration = r.read_u8(4)?;
        }
    }

    let mut samples_per_frame = 1024;
    let channels = if is_general_audio(core_type) {
        // GASpecificConfig (§4.4.1).
        let header = (|| -> Result<(bool, bool)> {
            let frame_length_flag = r.read_bit()?;
            if r.read_bit()? {
                r.skip_bits(14)?; // coreCoderDelay
            }
            let extension_flag = r.read_bit()?;
            Ok((frame_length_flag, extension_flag))
        })();
        match header {
            Ok((frame_length_flag, _)) => {
                samples_per_frame = match (core_type, frame_length_flag) {
                    (23, false) => 512,
                    (23, true) => 480,
                    (_, false) => 1024,
                    (_, true) => 960,
                };
                if channel_configuration == 0 {
                    program_config_channels(&mut r)?
                } else {
                    channels_of(channel_configuration)?
                }
            }
            Err(e) if channel_configuration == 0 => return Err(e),
            Err(_) => channels_of(channel_configuration)?,
        }
    } else if channel_configuration == 0 {
        return Err(invalid(format!("channelConfiguration 0 with audio object type {core_type} is not supported")));
    } else {
        channels_of(channel_configuration)?
    };

    Ok(Parsed {
        config: AacConfig { asc: Bytes::copy_from_slice(asc), object_type, sample_rate, channels },
        samples_per_frame,
    })
}

/// Output channels of `channelConfiguration` 1..=15 (Table 1.19, with the 2013 additions).
fn channels_of(channel_configuration: u8) -> Result<u8> {
    match channel_configuration {
        1..=6 => Ok(channel_configuration),
        7 => Ok(8),
        11 => Ok(7),
        12 | 14 => Ok(8),
        13 => Ok(24),
        other => Err(invalid(format!("reserved channelConfiguration {other}"))),
    }
}

/// Counts the channels a program_config_element (§4.4.1.1) describes.
fn program_config_channels(r: &mut BitReader<'_>) -> Result<u8> {
    let _element_instance_tag = r.read_bits(4)?;
    let _object_type = r.read_bits(2)?;
    let _sampling_frequency_index = r.read_bits(4)?;
    let front = r.read_bits(4)?;
    let side = r.read_bits(4)?;
    let back = r.read_bits(4)?;
    let lfe = r.read_bits(2)?;
    let _num_assoc_data_elements = r.read_bits(3)?;
    let _num_valid_cc_elements = r.read_bits(4)?;
    if r.read_bit()? {
        r.skip_bits(4)?; // mono_mixdown_element_number
    }
    if r.read_bit()? {
        r.skip_bits(4)?; // stereo_mixdown_element_number
    }
    if r.read_bit()? {
        r.skip_bits(3)?; // matrix_mixdown_idx, pseudo_surround_enable
    }
    let mut channels = lfe;
    for _ in 0..(front + side + back) {
        let is_cpe = r.read_bit()?;
        r.skip_bits(4)?; // element tag
        channels += if is_cpe { 2 } else { 1 };
    }
    // At most 3 * 15 * 2 + 3 = 93.
    match u8::try_from(channels) {
        Ok(0) => Err(invalid("program config element without channels")),
        Ok(n) => Ok(n),
        Err(_) => Err(invalid("too many channels")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs (width, value) fields MSB-first, zero-padded to a byte.
    fn pack(fields: &[(u32, u32)]) -> Vec<u8> {
        let mut bits = Vec::new();
        for &(n, v) in fields {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        }
        bits.chunks(8)
            .map(|c| {
                let b = c.iter().fold(0u8, |a, &b| (a << 1) | u8::from(b));
                b << (8 - c.len())
            })
            .collect()
    }

    #[test]
    fn aac_lc_44100_stereo() {
        let c = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 44100, 2));
        assert_eq!(&c.asc[..], [0x12, 0x10]);
        assert_eq!(c.codec_string(), "mp4a.40.2");
        assert_eq!(c.samples_per_frame(), 1024);
    }

    #[test]
    fn aac_lc_48000_stereo_and_mono() {
        let c = AacConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 2));
        assert!((c.frame_duration_ms() - 21.333).abs() < 0.001);
        let c = AacConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 1));
    }

    #[test]
    fn obs_asc_with_sync_extension() {
        // OBS/FFmpeg append the backward-compatible SBR sync extension (0x2b7, SBR absent).
        let c = AacConfig::parse(&[0x11, 0x90, 0x56, 0xe5, 0x00]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 2));
        assert_eq!(c.asc.len(), 5);
    }

    #[test]
    fn explicit_frequency_escape() {
        let asc = pack(&[(5, 2), (4, 0xf), (24, 22_000), (4, 2), (3, 0)]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 22_000, 2));
        let asc = pack(&[(5, 2), (4, 0xf), (24, 0), (4, 2), (3, 0)]);
        assert!(matches!(AacConfig::parse(&asc), Err(MediaError::Invalid { .. })));
    }

    #[test]
    fn object_type_escape() {
        // 31 + 6 bits: object type 32 + 10 = 42 (USAC), 48 kHz, stereo.
        let asc = pack(&[(5, 31), (6, 10), (4, 3), (4, 2)]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (42, 48000, 2));
        assert_eq!(c.codec_string(), "mp4a.40.42");
    }

    #[test]
    fn explicit_he_aac() {
        // SBR (5), core 24 kHz stereo, extension 48 kHz, core AAC-LC.
        let asc = pack(&[(5, 5), (4, 6), (4, 2), (4, 3), (5, 2), (3, 0)]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (5, 24000, 2));
        assert_eq!(c.codec_string(), "mp4a.40.5");
        // HE-AAC v2 (PS), mono core.
        let asc = pack(&[(5, 29), (4, 6), (4, 1), (4, 3), (5, 2), (3, 0)]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!((c.object_type, c.channels), (29, 1));
    }

    #[test]
    fn frame_length_flag() {
        let asc = pack(&[(5, 2), (4, 3), (4, 2), (1, 1), (1, 0), (1, 0)]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!(c.samples_per_frame(), 960);
        let asc = pack(&[(5, 23), (4, 3), (4, 1), (1, 0), (1, 0), (1, 0)]);
        assert_eq!(AacConfig::parse(&asc).unwrap().samples_per_frame(), 512);
        // dependsOnCoreCoder skips 14 bits of delay.
        let asc = pack(&[(5, 2), (4, 3), (4, 2), (1, 1), (1, 1), (14, 0x3fff), (1, 0)]);
        assert_eq!(AacConfig::parse(&asc).unwrap().samples_per_frame(), 960);
    }

    #[test]
    fn channel_configurations() {
        for (cfg, ch) in [(1, 1), (2, 2), (6, 6), (7, 8), (11, 7), (12, 8), (13, 24), (14, 8)] {
            let asc = pack(&[(5, 2), (4, 3), (4, cfg), (3, 0)]);
            assert_eq!(AacConfig::parse(&asc).unwrap().channels, ch, "config {cfg}");
        }
        for cfg in [8, 9, 10, 15] {
            let asc = pack(&[(5, 2), (4, 3), (4, cfg), (3, 0)]);
            assert!(AacConfig::parse(&asc).is_err(), "config {cfg}");
        }
    }

    #[test]
    fn program_config_element() {
        // 5.1 in a PCE: front SCE + CPE, back CPE, one LFE.
        let asc = pack(&[
            (5, 2),
            (4, 3),
            (4, 0),
            (3, 0), // GASpecificConfig
            (4, 0),
            (2, 1),
            (4, 3),
            (4, 2),
            (4, 0),
            (4, 1),
            (2, 1),
            (3, 0),
            (4, 0),
            (1, 0),
            (1, 0),
            (1, 1),
            (3, 0),
            (5, 0),    // front SCE
            (5, 0x10), // front CPE
            (5, 0x11), // back CPE
            (4, 0),    // LFE
        ]);
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!(c.channels, 6);
        // The PCE is required when channelConfiguration is 0.
        let asc = pack(&[(5, 2), (4, 3), (4, 0), (3, 0), (4, 0)]);
        assert!(matches!(AacConfig::parse(&asc), Err(MediaError::Truncated { .. })));
        // An empty PCE.
        let asc = pack(&[(5, 2), (4, 3), (4, 0), (3, 0), (32, 0), (8, 0)]);
        assert!(matches!(AacConfig::parse(&asc), Err(MediaError::Invalid { .. })));
    }

    #[test]
    fn errors() {
        assert!(matches!(AacConfig::parse(&[]), Err(MediaError::Truncated { .. })));
        assert!(matches!(AacConfig::parse(&[0x12]), Err(MediaError::Truncated { .. })));
        // Object type 0.
        assert!(matches!(AacConfig::parse(&[0x01, 0x10]), Err(MediaError::Invalid { .. })));
        // Reserved frequency index 13.
        let asc = pack(&[(5, 2), (4, 13), (4, 2), (3, 0)]);
        assert!(matches!(AacConfig::parse(&asc), Err(MediaError::Invalid { .. })));
        // Escape without its 6 bits.
        assert!(AacConfig::parse(&[0xf8]).is_err());
        // Explicit frequency cut short.
        assert!(AacConfig::parse(&[0x17, 0x80, 0x00]).is_err());
        // Non-GA object type with channelConfiguration 0.
        let asc = pack(&[(5, 8), (4, 3), (4, 0)]);
        assert!(AacConfig::parse(&asc).is_err());
    }

    #[test]
    fn short_ga_config_is_tolerated() {
        // 13 bits present, GASpecificConfig's 3 bits missing: still AAC-LC 48 kHz stereo.
        let asc = pack(&[(5, 2), (4, 3), (4, 2)]);
        assert_eq!(asc.len(), 2);
        let asc = [asc[0], asc[1] | 0x07]; // frameLength, dependsOnCore, extension all set
        let c = AacConfig::parse(&asc).unwrap();
        assert_eq!((c.sample_rate, c.channels, c.samples_per_frame()), (48000, 2, 1024));
    }
}
