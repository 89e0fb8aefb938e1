//! H.264/AVC: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), the sequence
//! parameter set fields a packager needs (ITU-T H.264 §7.3.2.1), and AVCC ↔ Annex-B.

use std::iter::FusedIterator;

use bytes::Bytes;

use crate::bits::BitReader;
use crate::{MediaError, Result};

/// NAL unit type of a non-IDR coded slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of an IDR coded slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// The Annex-B start code this crate writes before every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The `nal_unit_type` of a NAL unit (its first byte's low 5 bits), or `None` if it is empty.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

fn invalid(what: &'static str, reason: impl Into<String>) -> MediaError {
    MediaError::Invalid { what, reason: reason.into() }
}

/// An H.264 decoder configuration, as carried by the FLV/RTMP "sequence header" (AVC packet
/// type 0) and by the MP4 `avcC` box.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// The raw AVCDecoderConfigurationRecord, exactly as received (usable as an `avcC` body).
    pub record: Bytes,
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, …), taken from the first SPS.
    pub profile_idc: u8,
    /// The constraint flags byte (`constraint_set0_flag` … ), taken from the first SPS.
    pub profile_compat: u8,
    /// `level_idc` (e.g. 31 for level 3.1), taken from the first SPS.
    pub level_idc: u8,
    /// Size in bytes of the length prefix of each NAL unit in the access units: 1, 2 or 4.
    pub nal_length_size: u8,
    /// The sequence parameter set NAL units (with their NAL header byte, without prefix).
    pub sps: Vec<Bytes>,
    /// The picture parameter set NAL units (with their NAL header byte, without prefix).
    pub pps: Vec<Bytes>,
    /// Display width in luma samples (after frame cropping), from the first SPS.
    pub width: u32,
    /// Display height in luma samples (after frame cropping), from the first SPS.
    pub height: u32,
    /// Frames per second from the first SPS's VUI timing info
    /// (`time_scale / (2 * num_units_in_tick)`), if present.
    pub fps: Option<f64>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord and its first SPS.
    ///
    /// The record must hold at least one SPS; the PPS list may be empty (in-band PPS).
    /// Bytes after the PPS list (the High-profile extension fields) are kept in
    /// [`record`](Self::record) but not interpreted. The profile, constraint flags and level
    /// reported are those of the first SPS, which a conforming record repeats in its header.
    pub fn parse(record: &[u8]) -> Result<AvcConfig> {
        const WHAT: &str = "AVCDecoderConfigurationRecord";
        let record = Bytes::copy_from_slice(record);
        if record.len() < 6 {
            return Err(MediaError::Truncated { what: WHAT, need: 6, have: record.len() });
        }
        if record[0] != 1 {
            return Err(invalid(WHAT, format!("configurationVersion {} (expected 1)", record[0])));
        }
        let nal_length_size = (record[4] & 0b11) + 1;
        if nal_length_size == 3 {
            return Err(invalid(WHAT, "lengthSizeMinusOne 2 is not allowed"));
        }

        let mut pos = 5usize;
        let num_sps = usize::from(record[pos] & 0x1f);
        pos += 1;
        if num_sps == 0 {
            return Err(invalid(WHAT, "no sequence parameter set"));
        }
        let sps = read_parameter_sets(&record, &mut pos, num_sps, NAL_SPS, "SPS")?;

        let Some(&num_pps) = record.get(pos) else {
            return Err(MediaError::Truncated { what: WHAT, need: pos.saturating_add(1), have: record.len() });
        };
        pos += 1;
        let pps = read_parameter_sets(&record, &mut pos, usize::from(num_pps), NAL_PPS, "PPS")?;

        let first = Sps::parse(&sps[0])?;
        Ok(AvcConfig {
            record,
            profile_idc: first.profile_idc,
            profile_compat: first.constraint_flags,
            level_idc: first.level_idc,
            nal_length_size,
            sps,
            pps,
            width: first.width,
            height: first.height,
            fps: first.fps,
        })
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001f` for High profile level 3.1.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile_idc, self.profile_compat, self.level_idc)
    }

    /// All SPS then all PPS, each preceded by a 4-byte Annex-B start code (what an MPEG-TS
    /// packager puts before each IDR picture).
    pub fn annexb_parameter_sets(&self) -> Vec<u8> {
        let len: usize = self
            .sps
            .iter()
            .chain(&self.pps)
            .map(|nal| nal.len().saturating_add(START_CODE.len()))
            .fold(0, usize::saturating_add);
        let mut out = Vec::with_capacity(len);
        for nal in self.sps.iter().chain(&self.pps) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// Reads `count` 16-bit-length-prefixed NAL units of type `nal_type` starting at `*pos`.
fn read_parameter_sets(
    record: &Bytes,
    pos: &mut usize,
    count: usize,
    nal_type_expected: u8,
    what: &'static str,
) -> Result<Vec<Bytes>> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let len_end = pos.saturating_add(2);
        let Some(len_bytes) = record.get(*pos..len_end) else {
            return Err(MediaError::Truncated { what, need: len_end, have: record.len() });
        };
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let end = len_end.saturating_add(len);
        if end > record.len() {
            return Err(MediaError::Truncated { what, need: end, have: record.len() });
        }
        let nal = record.slice(len_end..end);
        match nal_type(&nal) {
            None => return Err(invalid(what, "empty NAL unit")),
            Some(t) if t != nal_type_expected => {
                return Err(invalid(what, format!("NAL unit type {t} (expected {nal_type_expected})")));
            }
            Some(_) => {}
        }
        sets.push(nal);
        *pos = end;
    }
    Ok(sets)
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`), turning a NAL unit's payload
/// into its raw byte sequence payload (RBSP).
pub fn remove_emulation_prevention(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0usize;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
    out
}

/// The fields of a sequence parameter set that OnAir uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Sps {
    pub profile_idc: u8,
    /// The constraint flags byte.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub seq_parameter_set_id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// False for interlaced (field or MBAFF) coding.
    pub frame_mbs_only: bool,
    /// Width in luma samples after cropping.
    pub width: u32,
    /// Height in luma samples after cropping.
    pub height: u32,
    /// Sample aspect ratio (`sar_width`, `sar_height`) from the VUI, if signalled.
    pub sar: Option<(u16, u16)>,
    /// Frame rate from the VUI timing info, if present.
    pub fps: Option<f64>,
}

/// Profiles whose SPS carries `chroma_format_idc`, bit depths and scaling matrices.
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135)
}

/// Sample aspect ratios of `aspect_ratio_idc` 1..=16 (Table E-1).
const SAR_TABLE: [(u16, u16); 16] = [
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];

impl Sps {
    /// Parses an SPS NAL unit (starting with its NAL header byte, type 7), emulation
    /// prevention bytes included.
    ///
    /// Everything up to the frame size must be present and valid. The VUI is read only for
    /// the sample aspect ratio and the timing info; a VUI that ends early just leaves those
    /// unset.
    pub fn parse(nal: &[u8]) -> Result<Sps> {
        const WHAT: &str = "SPS";
        match nal_type(nal) {
            None => {
                return Err(MediaError::Truncated { what: WHAT, need: 1, have: 0 });
            }
            Some(NAL_SPS) => {}
            Some(t) => return Err(invalid(WHAT, format!("NAL unit type {t} (expected 7)"))),
        }
        if nal[0] & 0x80 != 0 {
            return Err(invalid(WHAT, "forbidden_zero_bit set"));
        }
        let rbsp = remove_emulation_prevention(&nal[1..]);
        let mut r = BitReader::new(&rbsp, WHAT);

        let profile_idc = r.read_u8(8)?;
        let constraint_flags = r.read_u8(8)?;
        let level_idc = r.read_u8(8)?;
        let seq_parameter_set_id = r.read_ue()?;
        if seq_parameter_set_id > 31 {
            return Err(invalid(WHAT, format!("seq_parameter_set_id {seq_parameter_set_id}")));
        }

        let mut chroma_format_idc = 1u32;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma_minus8 = 0u32;
        let mut bit_depth_chroma_minus8 = 0u32;
        if has_chroma_info(profile_idc) {
            chroma_format_idc = r.read_ue()?;
            if chroma_format_idc > 3 {
                return Err(invalid(WHAT, format!("chroma_format_idc {chroma_format_idc}")));
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.read_bit()?;
            }
            bit_depth_luma_minus8 = r.read_ue()?;
            bit_depth_chroma_minus8 = r.read_ue()?;
            if bit_depth_luma_minus8 > 6 || bit_depth_chroma_minus8 > 6 {
                return Err(invalid(WHAT, "bit depth above 14"));
            }
            let _qpprime_y_zero_transform_bypass = r.read_bit()?;
            let seq_scaling_matrix_present = r.read_bit()?;
            if seq_scaling_matrix_present {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.read_bit()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }

        let log2_max_frame_num_minus4 = r.read_ue()?;
        if log2_max_frame_num_minus4 > 12 {
            return Err(invalid(WHAT, "log2_max_frame_num_minus4 above 12"));
        }
        let pic_order_cnt_type = r.read_ue()?;
        match pic_order_cnt_type {
            0 => {
                if r.read_ue()? > 12 {
                    return Err(invalid(WHAT, "log2_max_pic_order_cnt_lsb_minus4 above 12"));
                }
            }
            1 => {
                let _delta_pic_order_always_zero = r.read_bit()?;
                let _offset_for_non_ref_pic = r.read_se()?;
                let _offset_for_top_to_bottom_field = r.read_se()?;
                let cycle = r.read_ue()?;
                if cycle > 255 {
                    return Err(invalid(WHAT, "num_ref_frames_in_pic_order_cnt_cycle above 255"));
                }
                for _ in 0..cycle {
                    let _offset_for_ref_frame = r.read_se()?;
                }
            }
            2 => {}
            other => return Err(invalid(WHAT, format!("pic_order_cnt_type {other}"))),
        }
        let _max_num_ref_frames = r.read_ue()?;
        let _gaps_in_frame_num_allowed = r.read_bit()?;
        let pic_width_in_mbs_minus1 = u64::from(r.read_ue()?);
        let pic_height_in_map_units_minus1 = u64::from(r.read_ue()?);
        let frame_mbs_only = r.read_bit()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.read_bit()?;
        }
        let _direct_8x8_inference = r.read_bit()?;
        let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0u64, 0u64, 0u64, 0u64);
        if r.read_bit()? {
            crop_left = u64::from(r.read_ue()?);
            crop_right = u64::from(r.read_ue()?);
            crop_top = u64::from(r.read_ue()?);
            crop_bottom = u64::from(r.read_ue()?);
        }

        // §7.4.2.1.1: crop units depend on ChromaArrayType and field coding.
        let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
        let (sub_width_c, sub_height_c) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1), // 3 (4:4:4), and 0 where crop units are in luma samples.
        };
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let crop_unit_x = sub_width_c;
        let crop_unit_y = sub_height_c * field_factor;

        let coded_width = (pic_width_in_mbs_minus1 + 1) * 16;
        let coded_height = (pic_height_in_map_units_minus1 + 1) * 16 * field_factor;
        let crop_x = (crop_left + crop_right) * crop_unit_x;
        let crop_y = (crop_top + crop_bottom) * crop_unit_y;
        if crop_x >= coded_width || crop_y >= coded_height {
            return Err(invalid(
                WHAT,
                format!("frame cropping ({crop_x}x{crop_y}) removes the whole {coded_width}x{coded_height} picture"),
            ));
        }
        let width = u32::try_from(coded_width - crop_x)
            .map_err(|_| invalid(WHAT, format!("width {} too large", coded_width - crop_x)))?;
        let height = u32::try_from(coded_height - crop_y)
            .map_err(|_| invalid(WHAT, format!("height {} too large", coded_height - crop_y)))?;

        let mut sps = Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            seq_parameter_set_id,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: (bit_depth_luma_minus8 + 8) as u8,
            bit_depth_chroma: (bit_depth_chroma_minus8 + 8) as u8,
            frame_mbs_only,
            width,
            height,
            sar: None,
            fps: None,
        };
        // A truncated or odd VUI only costs us the optional fields.
        if let Ok(true) = r.read_bit() {
            let _ = read_vui(&mut r, &mut sps);
        }
        Ok(sps)
    }
}

/// Reads a scaling_list() (§7.3.2.1.1.1) only to skip past it.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<()> {
    let mut last_scale: i32 = 8;
    let mut next_scale: i32 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta_scale = r.read_se()?;
            if !(-128..=127).contains(&delta_scale) {
                return Err(invalid("SPS", format!("scaling list delta_scale {delta_scale}")));
            }
            next_scale = (last_scale + delta_scale + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Reads the VUI (Annex E.1.1) up to the timing info, filling `sar` and `fps`.
fn read_vui(r: &mut BitReader<'_>, sps: &mut Sps) -> Result<()> {
    if r.read_bit()? {
        let aspect_ratio_idc = r.read_u8(8)?;
        sps.sar = match aspect_ratio_idc {
            255 => {
                let w = r.read_bits(16)? as u16;
                let h = r.read_bits(16)? as u16;
                (w != 0 && h != 0).then_some((w, h))
            }
            1..=16 => Some(SAR_TABLE[usize::from(aspect_ratio_idc - 1)]),
            _ => None,
        };
    }
    if r.read_bit()? {
        let _overscan_appropriate = r.read_bit()?;
    }
    if r.read_bit()? {
        let _video_format = r.read_bits(3)?;
        let _video_full_range = r.read_bit()?;
        if r.read_bit()? {
            let _colour_primaries_transfer_matrix = r.read_bits(24)?;
        }
    }
    if r.read_bit()? {
        let _chroma_sample_loc_type_top_field = r.read_ue()?;
        let _chroma_sample_loc_type_bottom_field = r.read_ue()?;
    }
    if r.read_bit()? {
        let num_units_in_tick = r.read_bits(32)?;
        let time_scale = r.read_bits(32)?;
        let _fixed_frame_rate = r.read_bit()?;
        if num_units_in_tick != 0 && time_scale != 0 {
            sps.fps = Some(f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick)));
        }
    }
    Ok(())
}

/// Iterator over the NAL units of an AVCC (length-prefixed) access unit; see [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    rest: &'a [u8],
    nal_length_size: u8,
    done: bool,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.rest.is_empty() {
                return None;
            }
            let n = usize::from(self.nal_length_size);
            if !(1..=4).contains(&n) {
                self.done = true;
                return Some(Err(invalid("NAL length size", format!("{n} (must be 1, 2 or 4)"))));
            }
            let Some((len_bytes, rest)) = self.rest.split_at_checked(n) else {
                self.done = true;
                return Some(Err(MediaError::Truncated { what: "NAL unit length", need: n, have: self.rest.len() }));
            };
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let Some((nal, rest)) = rest.split_at_checked(len) else {
                self.done = true;
                return Some(Err(MediaError::Truncated { what: "NAL unit", need: len, have: rest.len() }));
            };
            self.rest = rest;
            if !nal.is_empty() {
                return Some(Ok(nal));
            }
        }
    }
}

impl FusedIterator for NalUnits<'_> {}

/// Iterates the NAL units of an AVCC access unit: each is preceded by a big-endian length of
/// `nal_length_size` bytes (1, 2 or 4; 3 is accepted too). Zero-length NAL units are skipped.
/// A malformed unit yields one `Err` and ends the iteration.
pub fn nal_units(data: &[u8], nal_length_size: u8) -> NalUnits<'_> {
    NalUnits { rest: data, nal_length_size, done: false }
}

/// Converts an AVCC access unit to Annex-B, with a 4-byte start code before each NAL unit.
pub fn avcc_to_annexb(data: &[u8], nal_length_size: u8) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len().saturating_add(16));
    for nal in nal_units(data, nal_length_size) {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal?);
    }
    Ok(out)
}

/// Whether the access unit holds an IDR slice (NAL unit type 5). Units after a malformed
/// length are not looked at.
pub fn is_idr(data: &[u8], nal_length_size: u8) -> bool {
    nal_units(data, nal_length_size).map_while(Result::ok).any(|nal| nal_type(nal) == Some(NAL_IDR))
}

/// Iterates the NAL units of an Annex-B byte stream (split at `00 00 01` / `00 00 00 01`),
/// without their start codes and trailing zero bytes. Bytes before the first start code are
/// ignored; empty units are skipped.
pub fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    // Offsets just past each start code.
    let mut starts = Vec::new();
    let mut i = 0usize;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|&s| s - 3).chain(std::iter::once(data.len())).collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        let nal = data.get(s..e)?;
        let trimmed_len = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let nal = &nal[..trimmed_len];
        (!nal.is_empty()).then_some(nal)
    })
}

/// Converts an Annex-B byte stream to AVCC with `nal_length_size`-byte lengths.
pub fn annexb_to_avcc(data: &[u8], nal_length_size: u8) -> Result<Vec<u8>> {
    let n = usize::from(nal_length_size);
    if !(1..=4).contains(&n) {
        return Err(invalid("NAL length size", format!("{n} (must be 1, 2 or 4)")));
    }
    let max_len = if n == 4 { u32::MAX as usize } else { (1usize << (8 * n)) - 1 };
    let mut out = Vec::with_capacity(data.len());
    for nal in annexb_nal_units(data) {
        if nal.len() > max_len {
            return Err(invalid("NAL unit", format!("{} bytes do not fit a {n}-byte length", nal.len())));
        }
        let len = (nal.len() as u64).to_be_bytes();
        out.extend_from_slice(&len[8 - n..]);
        out.extend_from_slice(nal);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // Parameter sets produced by libx264 (via ffmpeg) for the sizes in their names.
    const SPS_BASELINE_320X240_30: &str = "6742c00dd90141fb0110000003001000000303c0f142a480";
    const PPS_BASELINE_320X240: &str = "68cb83cb20";
    const SPS_HIGH_1920X1080_25: &str = "67640028acd940780227e5c044000003000400000300c83c60c658";
    const SPS_HIGH_640X360_30: &str = "6764001eacd940a02ff970110000030001000003003c0f162d96";
    const PPS_HIGH: &str = "68ebe3cb22c0";
    const SPS_HIGH444_1280X720_60: &str = "67f40020919b280a00b76022000003000200000300f01e30632c";
    const SPS_HIGH422_10BIT_1280X720_50: &str = "677a0020b6cd9405005bb011000003000100000300640f183196";
    const SPS_HIGH_INTERLACED_720X576_25: &str = "6764001eacd940b424d8088000000300800000190f8a14cb";
    const SPS_HIGH_1280X720_23976: &str = "6764001facd9405005bb011000003e90000bb800f1831960";
    // From the golden OBS 29 stream (x264, High, 640x360, 30 fps).
    const SPS_OBS_640X360: &str = "6764001eacb405017fcb80b50101014000000300400000 0f23c58ba8";

    fn record(sps: &[&[u8]], pps: &[&[u8]], length_size_minus_one: u8) -> Vec<u8> {
        let first = sps.first().copied().unwrap_or(&[0x67, 0x42, 0, 0x1e]);
        let mut r = vec![1, first[1], first[2], first[3], 0xfc | length_size_minus_one];
        r.push(0xe0 | sps.len() as u8);
        for s in sps {
            r.extend_from_slice(&(s.len() as u16).to_be_bytes());
            r.extend_from_slice(s);
        }
        r.push(pps.len() as u8);
        for p in pps {
            r.extend_from_slice(&(p.len() as u16).to_be_bytes());
            r.extend_from_slice(p);
        }
        r
    }

    #[test]
    fn sps_baseline_320x240() {
        let sps = Sps::parse(&hex(SPS_BASELINE_320X240_30)).unwrap();
        assert_eq!((sps.profile_idc, sps.constraint_flags, sps.level_idc), (66, 0xc0, 13));
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!(sps.chroma_format_idc, 1);
        assert!(sps.frame_mbs_only);
        assert_eq!(sps.sar, Some((1, 1)));
        assert_eq!(sps.fps, Some(30.0));
    }

    #[test]
    fn sps_high_1080_is_cropped_from_1088() {
        let sps = Sps::parse(&hex(SPS_HIGH_1920X1080_25)).unwrap();
        assert_eq!((sps.profile_idc, sps.level_idc), (100, 40));
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.fps, Some(25.0));
    }

    #[test]
    fn sps_high_640x360() {
        for (sps, fps) in [(SPS_HIGH_640X360_30, 30.0), (SPS_OBS_640X360, 30.0)] {
            let sps = Sps::parse(&hex(sps)).unwrap();
            assert_eq!((sps.profile_idc, sps.level_idc), (100, 30));
            assert_eq!((sps.width, sps.height), (640, 360));
            assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (8, 8));
            assert_eq!(sps.fps, Some(fps));
        }
    }

    #[test]
    fn sps_high444_and_high422_10bit() {
        let sps = Sps::parse(&hex(SPS_HIGH444_1280X720_60)).unwrap();
        assert_eq!((sps.profile_idc, sps.chroma_format_idc), (244, 3));
        assert_eq!((sps.width, sps.height, sps.fps), (1280, 720, Some(60.0)));

        let sps = Sps::parse(&hex(SPS_HIGH422_10BIT_1280X720_50)).unwrap();
        assert_eq!((sps.profile_idc, sps.chroma_format_idc), (122, 2));
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert_eq!((sps.width, sps.height, sps.fps), (1280, 720, Some(50.0)));
    }

    #[test]
    fn sps_interlaced() {
        let sps = Sps::parse(&hex(SPS_HIGH_INTERLACED_720X576_25)).unwrap();
        assert!(!sps.frame_mbs_only);
        assert_eq!((sps.width, sps.height), (720, 576));
    }

    #[test]
    fn sps_ntsc_film_rate() {
        let sps = Sps::parse(&hex(SPS_HIGH_1280X720_23976)).unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        let fps = sps.fps.unwrap();
        assert!((fps - 24000.0 / 1001.0).abs() < 1e-9, "{fps}");
    }

    /// Writes SPS fields MSB-first and adds emulation prevention, for hand-built vectors.
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn u(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let v1 = v + 1;
            let len = 64 - v1.leading_zeros();
            self.u(len - 1, 0).u(len, v1)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            let k = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(k as u64)
        }
        /// RBSP trailing bits, emulation prevention, NAL header 0x67.
        fn sps_nal(&mut self) -> Vec<u8> {
            self.u(1, 1);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let rbsp: Vec<u8> =
                self.bits.chunks(8).map(|c| c.iter().fold(0u8, |a, &b| (a << 1) | u8::from(b))).collect();
            let mut nal = vec![0x67];
            let mut zeros = 0;
            for b in rbsp {
                if zeros >= 2 && b <= 3 {
                    nal.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                nal.push(b);
            }
            nal
        }
    }

    #[test]
    fn sps_hand_built_with_scaling_lists_poc1_422_crop_and_vui() {
        let mut w = BitWriter::default();
        w.u(8, 122).u(8, 0).u(8, 41).ue(3); // High 4:2:2, level 4.1, sps id 3
        w.ue(2).ue(2).ue(2).u(1, 0); // chroma 4:2:2, 10-bit, no bypass
        w.u(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            if i % 2 == 0 {
                w.u(1, 0);
                continue;
            }
            w.u(1, 1);
            let size = if i < 6 { 16 } else { 64 };
            if i == 1 {
                // -8 makes nextScale 0: the rest of the list repeats, no more deltas.
                w.se(-8);
            } else {
                for j in 0..size {
                    w.se(if j % 2 == 0 { 5 } else { -5 });
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1).u(1, 0).se(-3).se(7).ue(3).se(1).se(-1).se(100); // poc type 1
        w.ue(4).u(1, 0); // max refs, no gaps
        w.ue(119).ue(67); // 1920 x 1088
        w.u(1, 1).u(1, 1); // frame_mbs_only, direct_8x8
        w.u(1, 1).ue(1).ue(3).ue(2).ue(6); // crop: x units 2, y units 1
        w.u(1, 1); // VUI
        w.u(1, 1).u(8, 255).u(16, 4).u(16, 3); // extended SAR 4:3
        w.u(1, 1).u(1, 0); // overscan
        w.u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(24, 0x01_01_01); // video signal, colour
        w.u(1, 1).ue(0).ue(0); // chroma loc
        w.u(1, 1).u(32, 1001).u(32, 120_000).u(1, 1); // 59.94 fps
        let nal = w.sps_nal();
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!(sps.seq_parameter_set_id, 3);
        assert_eq!((sps.chroma_format_idc, sps.bit_depth_luma), (2, 10));
        assert_eq!((sps.width, sps.height), (1920 - 2 * 4, 1088 - 8));
        assert_eq!(sps.sar, Some((4, 3)));
        assert!((sps.fps.unwrap() - 59.94).abs() < 0.001);
    }

    #[test]
    fn sps_hand_built_444_with_12_scaling_lists_and_fields() {
        let mut w = BitWriter::default();
        w.u(8, 244).u(8, 0).u(8, 51).ue(0);
        w.ue(3).u(1, 0).ue(0).ue(0).u(1, 0); // 4:4:4, one plane, 8-bit
        w.u(1, 1);
        for _ in 0..12 {
            w.u(1, 1).se(-8); // every list present, each ends at once
        }
        w.ue(0).ue(2); // poc type 2
        w.ue(1).u(1, 0).ue(44).ue(17); // 720 x (18 * 16 * 2 = 576)
        w.u(1, 0).u(1, 1).u(1, 1); // fields (MBAFF), direct_8x8
        w.u(1, 1).ue(0).ue(0).ue(0).ue(2); // crop bottom 2 * (1 * 2) = 4 lines
        w.u(1, 0); // no VUI
        let sps = Sps::parse(&w.sps_nal()).unwrap();
        assert_eq!(sps.chroma_format_idc, 3);
        assert!(!sps.frame_mbs_only);
        assert_eq!((sps.width, sps.height), (720, 572));
        assert_eq!((sps.sar, sps.fps), (None, None));
    }

    #[test]
    fn sps_separate_colour_planes_crop_in_luma_units() {
        let mut w = BitWriter::default();
        w.u(8, 244).u(8, 0).u(8, 40).ue(0);
        w.ue(3).u(1, 1).ue(0).ue(0).u(1, 0).u(1, 0); // separate_colour_plane_flag
        w.ue(0).ue(0).ue(4); // poc 0
        w.ue(1).u(1, 0).ue(9).ue(9).u(1, 1).u(1, 1); // 160 x 160
        w.u(1, 1).ue(1).ue(1).ue(1).ue(1);
        w.u(1, 0);
        let sps = Sps::parse(&w.sps_nal()).unwrap();
        assert_eq!((sps.width, sps.height), (158, 158));
    }

    #[test]
    fn sps_truncated_vui_keeps_the_size() {
        let mut w = BitWriter::default();
        w.u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(0).ue(0).ue(1).u(1, 0);
        w.ue(39).ue(29).u(1, 1).u(1, 1).u(1, 0); // 640x480
        w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 1).u(8, 0); // timing info cut short
        let nal = w.sps_nal();
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height, sps.fps), (640, 480, None));
    }

    #[test]
    fn sps_errors() {
        assert!(matches!(Sps::parse(&[]), Err(MediaError::Truncated { .. })));
        assert!(matches!(Sps::parse(&[0x68, 0x42]), Err(MediaError::Invalid { .. })));
        assert!(matches!(Sps::parse(&[0xe7, 0x42]), Err(MediaError::Invalid { .. })));
        // Every strict prefix of a real SPS, up to the crop fields, fails cleanly.
        let full = hex(SPS_HIGH_1920X1080_25);
        for len in 0..11 {
            assert!(Sps::parse(&full[..len]).is_err(), "prefix {len}");
        }
        // Cropping more than the picture.
        let mut w = BitWriter::default();
        w.u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(0).ue(0).ue(1).u(1, 0);
        w.ue(0).ue(0).u(1, 1).u(1, 1).u(1, 1).ue(4).ue(4).ue(0).ue(0).u(1, 0);
        assert!(matches!(Sps::parse(&w.sps_nal()), Err(MediaError::Invalid { .. })));
        // A huge width overflows u32 and is refused, not wrapped.
        let mut w = BitWriter::default();
        w.u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(0).ue(0).ue(1).u(1, 0);
        w.ue(u64::from(u32::MAX) - 1).ue(0).u(1, 1).u(1, 1).u(1, 0).u(1, 0);
        assert!(matches!(Sps::parse(&w.sps_nal()), Err(MediaError::Invalid { .. })));
        // Bad poc type, chroma format.
        let mut w = BitWriter::default();
        w.u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(3);
        assert!(matches!(Sps::parse(&w.sps_nal()), Err(MediaError::Invalid { .. })));
        let mut w = BitWriter::default();
        w.u(8, 100).u(8, 0).u(8, 30).ue(0).ue(4);
        assert!(matches!(Sps::parse(&w.sps_nal()), Err(MediaError::Invalid { .. })));
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(remove_emulation_prevention(&[0, 0, 3, 1]), [0, 0, 1]);
        assert_eq!(remove_emulation_prevention(&[0, 0, 3, 0, 0, 3]), [0, 0, 0, 0]);
        assert_eq!(remove_emulation_prevention(&[0, 3, 0, 3]), [0, 3, 0, 3]);
        assert_eq!(remove_emulation_prevention(&[0, 0, 0, 3, 3]), [0, 0, 0, 3]);
        assert_eq!(remove_emulation_prevention(&[]), [] as [u8; 0]);
    }

    #[test]
    fn record_high_640x360() {
        let sps = hex(SPS_HIGH_640X360_30);
        let pps = hex(PPS_HIGH);
        let rec = record(&[&sps], &[&pps], 3);
        let cfg = AvcConfig::parse(&rec).unwrap();
        assert_eq!(&cfg.record[..], &rec[..]);
        assert_eq!((cfg.profile_idc, cfg.profile_compat, cfg.level_idc), (100, 0, 30));
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.sps, vec![Bytes::from(sps.clone())]);
        assert_eq!(cfg.pps, vec![Bytes::from(pps.clone())]);
        assert_eq!((cfg.width, cfg.height, cfg.fps), (640, 360, Some(30.0)));
        assert_eq!(cfg.codec_string(), "avc1.64001e");

        let mut expected = vec![0, 0, 0, 1];
        expected.extend_from_slice(&sps);
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(&pps);
        assert_eq!(cfg.annexb_parameter_sets(), expected);
    }

    #[test]
    fn record_baseline_with_high_extension_bytes_and_two_pps() {
        let sps = hex(SPS_BASELINE_320X240_30);
        let pps = hex(PPS_BASELINE_320X240);
        let mut rec = record(&[&sps], &[&pps, &pps], 1);
        rec.extend_from_slice(&[0xfd, 0xf8, 0xf8, 0x00]); // trailing fields are ignored
        let cfg = AvcConfig::parse(&rec).unwrap();
        assert_eq!(cfg.nal_length_size, 2);
        assert_eq!(cfg.pps.len(), 2);
        assert_eq!(cfg.codec_string(), "avc1.42c00d");
        assert_eq!((cfg.width, cfg.height), (320, 240));
    }

    #[test]
    fn record_without_pps_is_accepted() {
        let sps = hex(SPS_HIGH_1920X1080_25);
        let cfg = AvcConfig::parse(&record(&[&sps], &[], 3)).unwrap();
        assert!(cfg.pps.is_empty());
        assert_eq!(cfg.codec_string(), "avc1.640028");
    }

    #[test]
    fn record_errors() {
        let sps = hex(SPS_HIGH_640X360_30);
        let pps = hex(PPS_HIGH);
        let good = record(&[&sps], &[&pps], 3);
        for len in 0..good.len() {
            assert!(AvcConfig::parse(&good[..len]).is_err(), "prefix {len}");
        }
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(AvcConfig::parse(&bad), Err(MediaError::Invalid { .. })));
        let bad = record(&[&sps], &[&pps], 2);
        assert!(matches!(AvcConfig::parse(&bad), Err(MediaError::Invalid { .. })));
        let bad = record(&[], &[&pps], 3);
        assert!(matches!(AvcConfig::parse(&bad), Err(MediaError::Invalid { .. })));
        let bad = record(&[&pps], &[&sps], 3);
        assert!(matches!(AvcConfig::parse(&bad), Err(MediaError::Invalid { .. })));
        let bad = record(&[&sps, &[]], &[&pps], 3);
        assert!(matches!(AvcConfig::parse(&bad), Err(MediaError::Invalid { .. })));
    }

    #[test]
    fn nal_units_and_annexb() {
        let au4 = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        let nals: Vec<&[u8]> = nal_units(&au4, 4).map(Result::unwrap).collect();
        assert_eq!(nals, [&[0x09, 0xf0][..], &[0x65, 0x88, 0x84][..]]);
        assert!(is_idr(&au4, 4));
        assert_eq!(avcc_to_annexb(&au4, 4).unwrap(), [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 0x88, 0x84]);

        let au1 = [1, 0x41, 2, 0x06, 0x05];
        assert!(!is_idr(&au1, 1));
        assert_eq!(nal_units(&au1, 1).count(), 2);
        let au2 = [0, 1, 0x41];
        assert_eq!(avcc_to_annexb(&au2, 2).unwrap(), [0, 0, 0, 1, 0x41]);

        assert_eq!(nal_units(&[], 4).count(), 0);
        assert_eq!(avcc_to_annexb(&[], 4).unwrap(), [] as [u8; 0]);
    }

    #[test]
    fn nal_units_errors() {
        // Truncated length, truncated unit, bad length sizes.
        assert!(matches!(avcc_to_annexb(&[0, 0, 1], 4), Err(MediaError::Truncated { .. })));
        assert!(matches!(avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4), Err(MediaError::Truncated { need: 9, have: 1, .. })));
        assert!(matches!(avcc_to_annexb(&[1, 0x65], 0), Err(MediaError::Invalid { .. })));
        assert!(matches!(avcc_to_annexb(&[1, 0x65], 5), Err(MediaError::Invalid { .. })));
        // An IDR before the broken unit still counts; the iterator stops after the error.
        let au = [1, 0x65, 9, 0x41];
        assert!(is_idr(&au, 1));
        let items: Vec<_> = nal_units(&au, 1).collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
        assert!(!is_idr(&[0xff, 0xff, 0xff, 0xff, 0x65], 4));
    }

    #[test]
    fn annexb_round_trip() {
        let annexb = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 0, 1, 0x65, 0x88, 0, 0, 3, 1];
        let nals: Vec<&[u8]> = annexb_nal_units(&annexb).collect();
        assert_eq!(nals, [&[0x09, 0xf0][..], &[0x67, 0x42][..], &[0x65, 0x88, 0, 0, 3, 1][..]]);
        let avcc = annexb_to_avcc(&annexb, 4).unwrap();
        let back = avcc_to_annexb(&avcc, 4).unwrap();
        assert_eq!(back, [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88, 0, 0, 3, 1]);
        assert!(annexb_to_avcc(&[0, 0, 1, 0x65], 3).is_ok());
        assert!(annexb_to_avcc(&[0, 0, 1, 0x65], 0).is_err());
        let big = [&[0, 0, 1][..], &[0x65; 300][..]].concat();
        assert!(annexb_to_avcc(&big, 1).is_err());
        assert_eq!(annexb_to_avcc(&big, 2).unwrap().len(), 302);
        assert_eq!(annexb_nal_units(&[0, 0]).count(), 0);
        assert_eq!(annexb_nal_units(&[0x65, 0, 0, 1]).count(), 0);
    }
}
