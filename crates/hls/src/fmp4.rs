//! A minimal ISO-BMFF / CMAF writer: the initialization segment (`ftyp` + `moov`) and media
//! fragments (`moof` + `mdat`) for one H.264 video track and one AAC audio track.
//!
//! Layout facts this module relies on (ISO/IEC 14496-12, 14496-14, 14496-15, ISO/IEC 23000-19):
//!
//! * every box is `size: u32, type: [u8; 4]`, a "full box" adds `version: u8, flags: u24`;
//! * the video track is [`VIDEO_TRACK_ID`] with timescale [`VIDEO_TIMESCALE`], the audio track is
//!   [`AUDIO_TRACK_ID`] with the AAC sample rate as timescale;
//! * fragments use `default-base-is-moof`, so each `trun` data offset counts from the first byte
//!   of the `moof`.

use bytes::Bytes;
use onair_media::{AacConfig, AvcConfig};

/// Track id of the H.264 track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the AAC track (also when there is no video track).
pub const AUDIO_TRACK_ID: u32 = 2;
/// Timescale of the video track (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples per AAC frame (AAC-LC, HE-AAC core).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// `sample_flags` of a sync sample: `sample_depends_on = 2` (does not depend on others).
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: `sample_depends_on = 1`, `sample_is_non_sync_sample`.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// One sample of a [`TrackRun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// [`SYNC_SAMPLE_FLAGS`] or [`NON_SYNC_SAMPLE_FLAGS`].
    pub flags: u32,
    /// Composition time offset (pts - dts) in the track's timescale.
    pub composition_offset: i32,
    /// The sample bytes (AVCC length-prefixed NAL units, or a raw AAC frame).
    pub data: Bytes,
}

/// The samples of one track inside a fragment.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    /// [`VIDEO_TRACK_ID`] or [`AUDIO_TRACK_ID`].
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

/// Big-endian box writer over a growing buffer.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer { buf: Vec::with_capacity(1024) }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u24(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes()[1..]);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Writes a box: header, then whatever `body` writes, then patches the size.
    fn boxed(&mut self, kind: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.u32(0);
        self.bytes(kind);
        body(self);
        self.patch_size(start);
    }

    /// Writes a full box (version and flags after the header).
    fn full(&mut self, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.boxed(kind, |w| {
            w.u8(version);
            w.u24(flags);
            body(w);
        });
    }

    fn patch_size(&mut self, start: usize) {
        // Boxes written here are far below 4 GiB (mdat, the only large one, is written by hand).
        let size = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    fn patch_i32(&mut self, at: usize, v: i32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// The unity transformation matrix of `mvhd` / `tkhd`.
    fn matrix(&mut self) {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
}

/// The initialization segment: `ftyp` + `moov` with one `trak` per known track and `mvex`.
///
/// With neither config the result is still a syntactically valid (empty) movie.
pub fn init_segment(video: Option<&AvcConfig>, audio: Option<&AacConfig>) -> Bytes {
    let mut w = Writer::new();
    w.boxed(b"ftyp", |w| {
        w.bytes(b"iso6");
        w.u32(0);
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            w.bytes(brand);
        }
    });
    w.boxed(b"moov", |w| {
        w.full(b"mvhd", 0, 0, |w| {
            w.u32(0); // creation_time
            w.u32(0); // modification_time
            w.u32(1000); // timescale
            w.u32(0); // duration: unknown (fragmented)
            w.u32(0x0001_0000); // rate 1.0
            w.u16(0x0100); // volume 1.0
            w.zeros(2 + 8); // reserved
            w.matrix();
            w.zeros(6 * 4); // pre_defined
            w.u32(AUDIO_TRACK_ID + 1); // next_track_ID
        });
        if let Some(v) = video {
            video_trak(w, v);
        }
        if let Some(a) = audio {
            audio_trak(w, a);
        }
        w.boxed(b"mvex", |w| {
            let ids = video.map(|_| VIDEO_TRACK_ID).into_iter().chain(audio.map(|_| AUDIO_TRACK_ID));
            for id in ids {
                w.full(b"trex", 0, 0, |w| {
                    w.u32(id);
                    w.u32(1); // default_sample_description_index
                    w.u32(0); // default_sample_duration
                    w.u32(0); // default_sample_size
                    w.u32(0); // default_sample_flags
                });
            }
        });
    });
    Bytes::from(w.buf)
}

fn tkhd(w: &mut Writer, track_id: u32, volume: u16, width: u32, height: u32) {
    // flags: track_enabled | track_in_movie
    w.full(b"tkhd", 0, 0x000003, |w| {
        w.u32(0); // creation_time
        w.u32(0); // modification_time
        w.u32(track_id);
        w.u32(0); // reserved
        w.u32(0); // duration
        w.zeros(8); // reserved
        w.u16(0); // layer
        w.u16(0); // alternate_group
        w.u16(volume);
        w.u16(0); // reserved
        w.matrix();
        w.u32(width.min(0xFFFF) << 16); // 16.16 fixed point
        w.u32(height.min(0xFFFF) << 16);
    });
}

fn mdhd_hdlr(w: &mut Writer, timescale: u32, handler: &[u8; 4], name: &str) {
    w.full(b"mdhd", 0, 0, |w| {
        w.u32(0); // creation_time
        w.u32(0); // modification_time
        w.u32(timescale);
        w.u32(0); // duration
        w.u16(0x55C4); // language "und" (packed ISO-639-2/T)
        w.u16(0); // pre_defined
    });
    w.full(b"hdlr", 0, 0, |w| {
        w.u32(0); // pre_defined
        w.bytes(handler);
        w.zeros(12); // reserved
        w.bytes(name.as_bytes());
        w.u8(0);
    });
}

fn dinf(w: &mut Writer) {
    w.boxed(b"dinf", |w| {
        w.full(b"dref", 0, 0, |w| {
            w.u32(1); // entry_count
            w.full(b"url ", 0, 0x000001, |_| {}); // media data in the same file
        });
    });
}

/// `stbl` with the given sample entry and empty sample tables (all samples live in fragments).
fn stbl(w: &mut Writer, entry: impl FnOnce(&mut Writer)) {
    w.boxed(b"stbl", |w| {
        w.full(b"stsd", 0, 0, |w| {
            w.u32(1); // entry_count
            entry(w);
        });
        w.full(b"stts", 0, 0, |w| w.u32(0));
        w.full(b"stsc", 0, 0, |w| w.u32(0));
        w.full(b"stsz", 0, 0, |w| {
            w.u32(0); // sample_size
            w.u32(0); // sample_count
        });
        w.full(b"stco", 0, 0, |w| w.u32(0));
    });
}

fn video_trak(w: &mut Writer, c: &AvcConfig) {
    let width = u16::try_from(c.width).unwrap_or(u16::MAX);
    let height = u16::try_from(c.height).unwrap_or(u16::MAX);
    w.boxed(b"trak", |w| {
        tkhd(w, VIDEO_TRACK_ID, 0, c.width, c.height);
        w.boxed(b"mdia", |w| {
            mdhd_hdlr(w, VIDEO_TIMESCALE, b"vide", "VideoHandler");
            w.boxed(b"minf", |w| {
                w.full(b"vmhd", 0, 0x000001, |w| {
                    w.u16(0); // graphicsmode
                    w.zeros(6); // opcolor
                });
                dinf(w);
                stbl(w, |w| {
                    w.boxed(b"avc1", |w| {
                        w.zeros(6); // reserved
                        w.u16(1); // data_reference_index
                        w.u16(0); // pre_defined
                        w.u16(0); // reserved
                        w.zeros(12); // pre_defined
                        w.u16(width);
                        w.u16(height);
                        w.u32(0x0048_0000); // horizresolution 72 dpi
                        w.u32(0x0048_0000); // vertresolution 72 dpi
                        w.u32(0); // reserved
                        w.u16(1); // frame_count
                        w.zeros(32); // compressorname (empty Pascal string)
                        w.u16(0x0018); // depth
                        w.u16(0xFFFF); // pre_defined = -1
                        w.boxed(b"avcC", |w| w.bytes(&c.record));
                    });
                });
            });
        });
    });
}

/// Appends an MPEG-4 descriptor (tag, expandable length, body) — ISO/IEC 14496-1 §8.3.3.
fn descriptor(w: &mut Writer, tag: u8, body: &[u8]) {
    w.u8(tag);
    let len = body.len();
    // Up to four 7-bit groups (the format's limit, 2^28 - 1); bodies here are a few bytes.
    let mut groups = 1;
    while groups < 4 && (len >> (7 * groups)) > 0 {
        groups += 1;
    }
    for i in (0..groups).rev() {
        let bits = ((len >> (7 * i)) & 0x7F) as u8;
        w.u8(if i > 0 { bits | 0x80 } else { bits });
    }
    w.bytes(body);
}

fn esds(w: &mut Writer, c: &AacConfig) {
    w.full(b"esds", 0, 0, |w| {
        let mut dsi = Writer::new();
        descriptor(&mut dsi, 0x05, &c.asc); // DecoderSpecificInfo
        let mut dcd = Writer::new();
        dcd.u8(0x40); // objectTypeIndication: Audio ISO/IEC 14496-3
        dcd.u8((0x05 << 2) | 1); // streamType audio, upStream 0, reserved 1
        dcd.u24(0); // bufferSizeDB
        dcd.u32(0); // maxBitrate (unknown)
        dcd.u32(0); // avgBitrate (unknown)
        dcd.bytes(&dsi.buf);
        let mut es = Writer::new();
        es.u16(0); // ES_ID
        es.u8(0); // no stream dependence, no URL, no OCR, priority 0
        descriptor(&mut es, 0x04, &dcd.buf); // DecoderConfigDescriptor
        descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor, predefined = MP4
        descriptor(w, 0x03, &es.buf); // ES_Descriptor
    });
}

fn audio_trak(w: &mut Writer, c: &AacConfig) {
    w.boxed(b"trak", |w| {
        tkhd(w, AUDIO_TRACK_ID, 0x0100, 0, 0);
        w.boxed(b"mdia", |w| {
            mdhd_hdlr(w, c.sample_rate.max(1), b"soun", "SoundHandler");
            w.boxed(b"minf", |w| {
                w.full(b"smhd", 0, 0, |w| {
                    w.u16(0); // balance
                    w.u16(0); // reserved
                });
                dinf(w);
                stbl(w, |w| {
                    w.boxed(b"mp4a", |w| {
                        w.zeros(6); // reserved
                        w.u16(1); // data_reference_index
                        w.zeros(8); // reserved
                        w.u16(u16::from(c.channels)); // channelcount
                        w.u16(16); // samplesize
                        w.u16(0); // pre_defined
                        w.u16(0); // reserved
                        // samplerate is 16.16 fixed point; rates above 65535 Hz do not fit and the
                        // decoder takes the real one from the AudioSpecificConfig anyway.
                        w.u32(if c.sample_rate <= 0xFFFF { c.sample_rate << 16 } else { 0 });
                        esds(w, c);
                    });
                });
            });
        });
    });
}

/// One media fragment: a `moof` (an `mfhd`, then one `traf` per track run with samples) followed
/// by one `mdat` holding the runs' sample bytes in the same order.
///
/// Runs without samples are skipped. Every `trun` has a data offset pointing at its first sample
/// byte (counted from the start of the `moof`, `default-base-is-moof`).
pub fn fragment(sequence: u32, tracks: &[TrackRun]) -> Bytes {
    let runs: Vec<&TrackRun> = tracks.iter().filter(|t| !t.samples.is_empty()).collect();
    let data_len: usize = runs.iter().flat_map(|t| t.samples.iter()).map(|s| s.data.len()).sum();
    let mut w = Writer::new();
    w.buf.reserve(data_len + 16);
    let mut offset_slots = Vec::with_capacity(runs.len());
    w.boxed(b"moof", |w| {
        w.full(b"mfhd", 0, 0, |w| w.u32(sequence));
        for run in &runs {
            w.boxed(b"traf", |w| {
                // default-base-is-moof
                w.full(b"tfhd", 0, 0x02_0000, |w| w.u32(run.track_id));
                w.full(b"tfdt", 1, 0, |w| w.u64(run.base_decode_time));
                // data-offset | sample-duration | sample-size | sample-flags | composition-offset
                w.full(b"trun", 1, 0x00_0F01, |w| {
                    w.u32(u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
                    offset_slots.push(w.buf.len());
                    w.i32(0); // data_offset, patched below
                    for s in run.samples {
                        w.u32(s.duration);
                        w.u32(u32::try_from(s.data.len()).unwrap_or(u32::MAX));
                        w.u32(s.flags);
                        w.i32(s.composition_offset);
                    }
                });
            });
        }
    });
    let moof_len = w.buf.len();
    // mdat header: 8 bytes, or 16 with a 64-bit largesize.
    let mdat_header = if data_len + 8 > u32::MAX as usize { 16 } else { 8 };
    let mut offset = moof_len + mdat_header;
    for (slot, run) in offset_slots.into_iter().zip(&runs) {
        w.patch_i32(slot, i32::try_from(offset).unwrap_or(i32::MAX));
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    if mdat_header == 16 {
        w.u32(1);
        w.bytes(b"mdat");
        w.u64((data_len + 16) as u64);
    } else {
        w.u32((data_len + 8) as u32);
        w.bytes(b"mdat");
    }
    for s in runs.iter().flat_map(|t| t.samples.iter()) {
        w.bytes(&s.data);
    }
    Bytes::from(w.buf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A parsed box: its type, its whole byte range in the input and its payload.
    #[derive(Debug, Clone)]
    pub(crate) struct BoxRef<'a> {
        pub kind: [u8; 4],
        pub start: usize,
        pub payload: &'a [u8],
        pub payload_start: usize,
    }

    /// Walks the boxes laid back to back in `data` (whose first byte sits at `base` in the file).
    pub(crate) fn walk(data: &[u8], base: usize) -> Vec<BoxRef<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            assert!(data.len() - pos >= 8, "truncated box header at {}", base + pos);
            let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().unwrap();
            let (size, header) = if size32 == 1 {
                let large = u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap());
                (large as usize, 16)
            } else {
                (size32, 8)
            };
            assert!(size >= header, "box {:?} too small", kind);
            assert!(pos + size <= data.len(), "box {:?} overruns its parent", kind);
            out.push(BoxRef {
                kind,
                start: base + pos,
                payload: &data[pos + header..pos + size],
                payload_start: base + pos + header,
            });
            pos += size;
        }
        out
    }

    pub(crate) fn child<'a>(boxes: &[BoxRef<'a>], kind: &[u8; 4]) -> BoxRef<'a> {
        boxes
            .iter()
            .find(|b| &b.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {} box", String::from_utf8_lossy(kind)))
    }

    pub(crate) fn children<'a>(b: &BoxRef<'a>) -> Vec<BoxRef<'a>> {
        walk(b.payload, b.payload_start)
    }

    pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }
    pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// A parsed `traf`: track id, tfdt, data offset and (duration, size, flags, cts) per sample.
    #[derive(Debug)]
    pub(crate) struct Traf {
        pub track_id: u32,
        pub base_decode_time: u64,
        pub data_offset: i32,
        pub samples: Vec<(u32, u32, u32, i32)>,
    }

    /// Parses a `moof` + `mdat` fragment; returns the sequence number, the trafs and, per traf,
    /// the sample bytes found through the data offset.
    pub(crate) fn parse_fragment(data: &[u8]) -> (u32, Vec<Traf>, Vec<Vec<Vec<u8>>>) {
        let top = walk(data, 0);
        assert_eq!(top.len(), 2, "fragment = moof + mdat");
        assert_eq!(&top[0].kind, b"moof");
        assert_eq!(&top[1].kind, b"mdat");
        let moof = &top[0];
        let mdat = &top[1];
        let inner = children(moof);
        let mfhd = child(&inner, b"mfhd");
        let seq = be32(mfhd.payload, 4);
        let mut trafs = Vec::new();
        let mut bytes = Vec::new();
        for traf in inner.iter().filter(|b| &b.kind == b"traf") {
            let kids = children(traf);
            let tfhd = child(&kids, b"tfhd");
            assert_eq!(be32(tfhd.payload, 0) & 0xFF_FFFF, 0x02_0000, "default-base-is-moof");
            let tfdt = child(&kids, b"tfdt");
            assert_eq!(tfdt.payload[0], 1, "tfdt version 1");
            let trun = child(&kids, b"trun");
            assert_eq!(trun.payload[0], 1, "trun version 1");
            assert_eq!(be32(trun.payload, 0) & 0xFF_FFFF, 0x00_0F01);
            let count = be32(trun.payload, 4) as usize;
            let data_offset = be32(trun.payload, 8) as i32;
            assert_eq!(trun.payload.len(), 12 + 16 * count);
            let mut samples = Vec::new();
            let mut sample_bytes = Vec::new();
            let mut at = moof.start + data_offset as usize;
            for i in 0..count {
                let o = 12 + 16 * i;
                let s = (
                    be32(trun.payload, o),
                    be32(trun.payload, o + 4),
                    be32(trun.payload, o + 8),
                    be32(trun.payload, o + 12) as i32,
                );
                let size = s.1 as usize;
                assert!(at >= mdat.payload_start && at + size <= mdat.payload_start + mdat.payload.len());
                sample_bytes.push(data[at..at + size].to_vec());
                at += size;
                samples.push(s);
            }
            trafs.push(Traf {
                track_id: be32(tfhd.payload, 4),
                base_decode_time: be64(tfdt.payload, 4),
                data_offset,
                samples,
            });
            bytes.push(sample_bytes);
        }
        (seq, trafs, bytes)
    }

    pub(crate) fn avc_config() -> AvcConfig {
        let sps = Bytes::from_static(&[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40]);
        let pps = Bytes::from_static(&[0x68, 0xEB, 0xE3, 0xCB]);
        let mut record = vec![1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, sps.len() as u8];
        record.extend_from_slice(&sps);
        record.extend_from_slice(&[1, 0, pps.len() as u8]);
        record.extend_from_slice(&pps);
        AvcConfig {
            record: Bytes::from(record),
            profile_idc: 0x64,
            profile_compat: 0,
            level_idc: 0x1F,
            nal_length_size: 4,
            sps: vec![sps],
            pps: vec![pps],
            width: 640,
            height: 360,
            fps: Some(30.0),
        }
    }

    pub(crate) fn aac_config() -> AacConfig {
        AacConfig { asc: Bytes::from_static(&[0x11, 0x90]), object_type: 2, sample_rate: 48_000, channels: 2 }
    }

    #[test]
    fn init_segment_structure() {
        let v = avc_config();
        let a = aac_config();
        let init = init_segment(Some(&v), Some(&a));
        let top = walk(&init, 0);
        let kinds: Vec<_> = top.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, vec![*b"ftyp", *b"moov"]);
        assert_eq!(&top[0].payload[..4], b"iso6");
        assert!(top[0].payload.chunks(4).any(|c| c == b"cmfc"));
        let moov = children(&top[1]);
        let kinds: Vec<_> = moov.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, vec![*b"mvhd", *b"trak", *b"trak", *b"mvex"]);
        // mvhd v0: timescale at 4+8, next_track_ID last.
        let mvhd = &moov[0];
        assert_eq!(mvhd.payload.len(), 100);
        assert_eq!(be32(mvhd.payload, 96), 3);

        // Video trak.
        let vtrak = children(&moov[1]);
        let tkhd = child(&vtrak, b"tkhd");
        assert_eq!(tkhd.payload.len(), 84);
        assert_eq!(be32(tkhd.payload, 12), VIDEO_TRACK_ID);
        assert_eq!(be32(tkhd.payload, 76), 640 << 16);
        assert_eq!(be32(tkhd.payload, 80), 360 << 16);
        let mdia = children(&child(&vtrak, b"mdia"));
        let mdhd = child(&mdia, b"mdhd");
        assert_eq!(be32(mdhd.payload, 12), VIDEO_TIMESCALE);
        assert_eq!(&child(&mdia, b"hdlr").payload[8..12], b"vide");
        let minf = children(&child(&mdia, b"minf"));
        child(&minf, b"vmhd");
        let dref = child(&children(&child(&minf, b"dinf")), b"dref");
        assert_eq!(be32(dref.payload, 4), 1);
        assert_eq!(&walk(&dref.payload[8..], 0)[0].kind, b"url ");
        let stbl = children(&child(&minf, b"stbl"));
        let kinds: Vec<_> = stbl.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, vec![*b"stsd", *b"stts", *b"stsc", *b"stsz", *b"stco"]);
        for b in &stbl[1..] {
            assert!(b.payload[4..].iter().all(|&x| x == 0), "empty sample tables");
        }
        let stsd = &stbl[0];
        assert_eq!(be32(stsd.payload, 4), 1);
        let avc1 = &walk(&stsd.payload[8..], stsd.payload_start + 8)[0];
        assert_eq!(&avc1.kind, b"avc1");
        assert_eq!(u16::from_be_bytes([avc1.payload[24], avc1.payload[25]]), 640);
        assert_eq!(u16::from_be_bytes([avc1.payload[26], avc1.payload[27]]), 360);
        let avcc = &walk(&avc1.payload[78..], 0)[0];
        assert_eq!(&avcc.kind, b"avcC");
        assert_eq!(avcc.payload, &v.record[..]);

        // Audio trak.
        let atrak = children(&moov[2]);
        assert_eq!(be32(child(&atrak, b"tkhd").payload, 12), AUDIO_TRACK_ID);
        let mdia = children(&child(&atrak, b"mdia"));
        assert_eq!(be32(child(&mdia, b"mdhd").payload, 12), 48_000);
        assert_eq!(&child(&mdia, b"hdlr").payload[8..12], b"soun");
        let minf = children(&child(&mdia, b"minf"));
        child(&minf, b"smhd");
        let stsd = child(&children(&child(&minf, b"stbl")), b"stsd");
        let mp4a = &walk(&stsd.payload[8..], 0)[0];
        assert_eq!(&mp4a.kind, b"mp4a");
        assert_eq!(u16::from_be_bytes([mp4a.payload[16], mp4a.payload[17]]), 2);
        assert_eq!(be32(mp4a.payload, 24), 48_000 << 16);
        let esds = &walk(&mp4a.payload[28..], 0)[0];
        assert_eq!(&esds.kind, b"esds");
        let d = &esds.payload[4..];
        // ES_Descriptor(3) { ES_ID, flags, DecoderConfig(4) { 0x40, 0x15, .., DSI(5) { asc } }, SL(6) }
        assert_eq!(d[0], 0x03);
        assert_eq!(d[1] as usize, d.len() - 2);
        assert_eq!(d[5], 0x04);
        assert_eq!(d[7], 0x40);
        assert_eq!(d[8], 0x15);
        assert_eq!(d[20], 0x05);
        assert_eq!(d[21], 2);
        assert_eq!(&d[22..24], &a.asc[..]);
        assert_eq!(&d[24..], &[0x06, 0x01, 0x02]);

        // mvex: one trex per track.
        let trex: Vec<u32> = children(&moov[3]).iter().map(|b| be32(b.payload, 4)).collect();
        assert_eq!(trex, vec![VIDEO_TRACK_ID, AUDIO_TRACK_ID]);
    }

    #[test]
    fn init_segment_single_tracks() {
        let a = aac_config();
        let init = init_segment(None, Some(&a));
        let moov = children(&walk(&init, 0)[1]);
        let kinds: Vec<_> = moov.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, vec![*b"mvhd", *b"trak", *b"mvex"]);
        let init = init_segment(Some(&avc_config()), None);
        let moov = children(&walk(&init, 0)[1]);
        assert_eq!(moov.len(), 3);
        // Nothing at all is still well formed.
        let init = init_segment(None, None);
        assert_eq!(walk(&init, 0).len(), 2);
    }

    #[test]
    fn descriptor_lengths() {
        for len in [0usize, 1, 127, 128, 300, 20_000] {
            let mut w = Writer::new();
            let body = vec![7u8; len];
            descriptor(&mut w, 5, &body);
            let mut n = 0usize;
            let mut i = 1;
            loop {
                let b = w.buf[i];
                n = (n << 7) | usize::from(b & 0x7F);
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            assert_eq!(n, len);
            assert_eq!(w.buf.len() - i, len);
        }
    }

    fn sample(duration: u32, flags: u32, cts: i32, fill: u8, len: usize) -> Sample {
        Sample { duration, flags, composition_offset: cts, data: Bytes::from(vec![fill; len]) }
    }

    #[test]
    fn fragment_round_trip() {
        let video = [
            sample(3000, SYNC_SAMPLE_FLAGS, 6000, 1, 100),
            sample(3000, NON_SYNC_SAMPLE_FLAGS, -3000, 2, 10),
            sample(3003, NON_SYNC_SAMPLE_FLAGS, 0, 3, 33),
        ];
        let audio = [sample(1024, SYNC_SAMPLE_FLAGS, 0, 9, 7), sample(1024, SYNC_SAMPLE_FLAGS, 0, 8, 5)];
        let frag = fragment(
            42,
            &[
                TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: 1 << 33, samples: &video },
                TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: 48_000, samples: &audio },
            ],
        );
        let (seq, trafs, bytes) = parse_fragment(&frag);
        assert_eq!(seq, 42);
        assert_eq!(trafs.len(), 2);
        assert_eq!(trafs[0].track_id, VIDEO_TRACK_ID);
        assert_eq!(trafs[0].base_decode_time, 1 << 33);
        assert_eq!(
            trafs[0].samples,
            vec![
                (3000, 100, SYNC_SAMPLE_FLAGS, 6000),
                (3000, 10, NON_SYNC_SAMPLE_FLAGS, -3000),
                (3003, 33, NON_SYNC_SAMPLE_FLAGS, 0)
            ]
        );
        assert_eq!(trafs[1].track_id, AUDIO_TRACK_ID);
        assert_eq!(trafs[1].base_decode_time, 48_000);
        // Offsets point at each track's first byte: right after the mdat header, then after video.
        let top = walk(&frag, 0);
        assert_eq!(trafs[0].data_offset as usize, top[1].payload_start);
        assert_eq!(trafs[1].data_offset as usize, top[1].payload_start + 143);
        assert_eq!(top[1].payload.len(), 143 + 12);
        for (got, want) in bytes[0].iter().zip(&video) {
            assert_eq!(&got[..], &want.data[..]);
        }
        for (got, want) in bytes[1].iter().zip(&audio) {
            assert_eq!(&got[..], &want.data[..]);
        }
        assert_eq!(frag.len(), top[1].start + 8 + 155);
    }

    #[test]
    fn fragment_skips_empty_runs() {
        let audio = [sample(1024, SYNC_SAMPLE_FLAGS, 0, 5, 4)];
        let frag = fragment(
            1,
            &[
                TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: 0, samples: &[] },
                TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: 7, samples: &audio },
            ],
        );
        let (_, trafs, bytes) = parse_fragment(&frag);
        assert_eq!(trafs.len(), 1);
        assert_eq!(trafs[0].track_id, AUDIO_TRACK_ID);
        assert_eq!(bytes[0][0], vec![5u8; 4]);
        // Nothing at all: an mfhd-only moof and an empty mdat, still well formed.
        let frag = fragment(2, &[]);
        let (seq, trafs, _) = parse_fragment(&frag);
        assert_eq!((seq, trafs.len()), (2, 0));
    }
}
