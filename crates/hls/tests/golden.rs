//! Golden tests: the real OBS 29 capture of `onair-media` (8 s, x264 High 640x360 at 30 fps with
//! an IDR every 2 s plus a scene-cut IDR at 7.5 s, AAC-LC 48 kHz stereo, no B-frames), and an
//! ffmpeg capture with B-frames (`tests/data/ffmpeg-x264-bf2-320x180p30-aac48k.flv`: 3 s, x264
//! High 320x180 at 30 fps, 2 B-frames as OBS's x264 default, an IDR every second, AAC-LC 48 kHz),
//! packaged end to end and read back by `ffprobe` (required: a missing one fails the test).

use std::process::Command;

use bytes::Bytes;
use onair_hls::{HlsConfig, Lookup, Packager, Position, Reload, parse_uri};
use onair_media::flv::{FlvTag, read_flv};
use onair_media::{AacConfig, AudioTag, AvcConfig, Frame, Track, VideoTag, parse_audio_tag, parse_video_tag};

const FILE: &[u8] = include_bytes!("../../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv");
const BFRAMES: &[u8] = include_bytes!("data/ffmpeg-x264-bf2-320x180p30-aac48k.flv");
const T0: u64 = 1_795_599_000_000; // 2026-11-25T09:30:00.000Z

struct Packaged {
    packager: Packager,
    avc: AvcConfig,
    aac: AacConfig,
    video_frames: usize,
    /// Audio frames from the first video keyframe on (earlier ones are dropped).
    audio_frames: usize,
    keyframes_ms: Vec<u64>,
}

fn package(file: &[u8]) -> Packaged {
    let mut p = Packager::new(HlsConfig::default(), "golden");
    let (mut avc, mut aac) = (None, None);
    let (mut video_frames, mut audio_frames) = (0, 0);
    let mut keyframes_ms = Vec::new();
    for tag in read_flv(file).expect("the golden file reads") {
        let dts = u64::from(tag.timestamp_ms);
        let frame = match tag.tag_type {
            FlvTag::VIDEO => match parse_video_tag(tag.body).expect("video tag") {
                VideoTag::Config(c) => {
                    p.set_video_config(c.clone());
                    avc = Some(c);
                    continue;
                }
                VideoTag::Frame { keyframe, composition_time_ms, data } => {
                    video_frames += 1;
                    if keyframe {
                        keyframes_ms.push(dts);
                    }
                    Frame { track: Track::Video, dts, cts: composition_time_ms, keyframe, data }
                }
                VideoTag::EndOfSequence => continue,
            },
            FlvTag::AUDIO => match parse_audio_tag(tag.body).expect("audio tag") {
                AudioTag::Config(c) => {
                    p.set_audio_config(c.clone());
                    aac = Some(c);
                    continue;
                }
                AudioTag::Frame(data) => {
                    // The capture starts with an audio frame at 0 ms, before the IDR at 16 ms.
                    if !keyframes_ms.is_empty() {
                        audio_frames += 1;
                    }
                    Frame { track: Track::Audio, dts, cts: 0, keyframe: true, data }
                }
            },
            _ => continue,
        };
        p.push(frame, T0 + dts);
    }
    p.finish();
    Packaged {
        packager: p,
        avc: avc.expect("avc config"),
        aac: aac.expect("aac config"),
        video_frames,
        audio_frames,
        keyframes_ms,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Counts the samples of each track over a sequence of `moof`+`mdat` fragments (box walk).
fn count_samples(mut data: &[u8]) -> (usize, usize) {
    let (mut video, mut audio) = (0, 0);
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    while !data.is_empty() {
        let size = be32(data, 0);
        if &data[4..8] == b"moof" {
            let mut inner = &data[8..size];
            while !inner.is_empty() {
                let s = be32(inner, 0);
                if &inner[4..8] == b"traf" {
                    let traf = &inner[8..s];
                    let (mut track, mut count, mut at) = (0, 0, 0);
                    while at < traf.len() {
                        let bs = be32(traf, at);
                        match &traf[at + 4..at + 8] {
                            b"tfhd" => track = be32(traf, at + 12),
                            b"trun" => count = be32(traf, at + 12),
                            _ => {}
                        }
                        at += bs;
                    }
                    match track {
                        1 => video += count,
                        2 => audio += count,
                        other => panic!("track {other}"),
                    }
                }
                inner = &inner[s..];
            }
        }
        data = &data[size..];
    }
    (video, audio)
}

#[test]
fn golden_obs29_package() {
    let g = package(FILE);
    let p = &g.packager;
    assert_eq!(g.video_frames, 240);
    assert_eq!(g.keyframes_ms.len(), 5, "IDRs at 0, 2, 4, 6 s and a scene cut at 7.5 s");

    // The init segment carries the decoder configurations verbatim.
    let init = p.init_segment(0).expect("init segment");
    let mut avcc = b"avcC".to_vec();
    avcc.extend_from_slice(&g.avc.record);
    assert!(contains(&init, &avcc), "avcC holds the AVCDecoderConfigurationRecord");
    assert!(contains(&init, b"mp4a"));
    assert!(contains(&init, &g.aac.asc), "esds holds the AudioSpecificConfig");

    // Segments follow the publisher's IDRs: 0-2, 2-4, 4-6, 6-7.5 s, then the tail.
    let snap = p.snapshot();
    assert!(snap.ended);
    let segs = &snap.segments;
    assert!((4..=5).contains(&segs.len()), "{} segments", segs.len());
    assert!(segs.iter().all(|s| s.complete));
    for s in &segs[..3] {
        assert!(s.duration_us.abs_diff(2_000_000) <= 40_000, "{}", s.duration_us);
    }
    for (seg, &kf) in segs.iter().zip(&g.keyframes_ms) {
        assert_eq!(seg.wall_ms, T0 + kf, "PROGRAM-DATE-TIME = arrival of the segment's IDR");
        assert!(seg.parts[0].independent);
    }
    let total_us: u64 = segs.iter().map(|s| s.duration_us).sum();
    assert!(total_us.abs_diff(8_000_000) < 100_000, "{total_us}");
    for seg in segs {
        for part in &seg.parts {
            assert!(part.duration_us <= 334_000, "part of {} us", part.duration_us);
        }
    }

    // Every frame went into exactly one part.
    let mut media = Vec::new();
    for seg in segs {
        let Lookup::Ready(parts) = p.segment(seg.msn) else { panic!("segment {}", seg.msn) };
        assert_eq!(parts.len(), seg.parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(p.part(seg.msn, i as u32), Lookup::Ready(part.clone()));
            media.extend_from_slice(part);
        }
    }
    let (video, audio) = count_samples(&media);
    assert_eq!(video, g.video_frames);
    assert_eq!(audio, g.audio_frames);

    // The playlists name what the lookups serve.
    let ll = String::from_utf8(p.llhls_playlist().unwrap().to_vec()).unwrap();
    assert!(ll.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:00.016Z\n"), "{ll}");
    assert!(ll.ends_with("#EXT-X-ENDLIST\n"));
    for line in ll.lines().filter(|l| !l.starts_with('#')) {
        let name = line.strip_prefix("golden/").expect("session directory");
        assert!(parse_uri(name).is_some(), "{name}");
    }
    for uri in ll.split("URI=\"").skip(1) {
        let uri = &uri[..uri.find('"').unwrap()];
        assert!(parse_uri(uri.strip_prefix("golden/").unwrap()).is_some(), "{uri}");
    }
    let last = p.position().unwrap();
    assert_eq!(last.msn, segs.last().unwrap().msn);
    assert_eq!(p.blocking_reload(last.msn + 1, Some(0)), Reload::Ready, "ended: no waiting");

    ffprobe_check(p, &init, &media, (640, 360, 2), g.video_frames, g.audio_frames);
}

/// The video samples of one part: (decode time, duration, composition offset) in 90 kHz ticks.
fn video_samples(part: &[u8]) -> Vec<(i64, i64, i64)> {
    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let size = be32(b, 0) as usize;
            out.push((<[u8; 4]>::try_from(&b[4..8]).unwrap(), &b[8..size]));
            b = &b[size..];
        }
        out
    }
    let mut samples = Vec::new();
    for (kind, moof) in boxes(part) {
        if &kind != b"moof" {
            continue;
        }
        for (_, traf) in boxes(moof).into_iter().filter(|(k, _)| k == b"traf") {
            let kids = boxes(traf);
            let find = |k: &[u8; 4]| kids.iter().find(|(kind, _)| kind == k).unwrap().1;
            if be32(find(b"tfhd"), 4) != 1 {
                continue;
            }
            let tfdt = find(b"tfdt");
            assert_eq!(tfdt[0], 1, "tfdt version 1");
            let mut dts = i64::from(be32(tfdt, 4)) << 32 | i64::from(be32(tfdt, 8));
            let trun = find(b"trun");
            assert_eq!(be32(trun, 0) & 0xFF_FFFF, 0x00_0F01, "duration, size, flags and offset per sample");
            for i in 0..be32(trun, 4) as usize {
                let at = 12 + 16 * i;
                let duration = i64::from(be32(trun, at));
                // Signed in trun version 1.
                let offset = i64::from(be32(trun, at + 12) as i32);
                samples.push((dts, duration, offset));
                dts += duration;
            }
        }
    }
    samples
}

#[test]
fn golden_bframes_package() {
    let g = package(BFRAMES);
    let p = &g.packager;
    assert_eq!(g.video_frames, 90);
    assert_eq!(g.keyframes_ms, vec![0, 1000, 2000]);
    let snap = p.snapshot();
    let segs = &snap.segments;
    assert_eq!(segs.len(), 3, "one segment per IDR");

    // Parts hold whole groups of B-frames: each part is presented after the one before it, so
    // no part leaves a hole in presentation order for the next one to fill (WebKit's MSE then
    // deletes the frame before the hole, and everything depending on it up to the next IDR).
    let mut parts = Vec::new();
    let mut media = Vec::new();
    for seg in segs {
        let Lookup::Ready(bytes) = p.segment(seg.msn) else { panic!("segment {}", seg.msn) };
        for (i, part) in bytes.iter().enumerate() {
            let samples = video_samples(part);
            assert!(!samples.is_empty(), "video in every part");
            assert!(seg.parts[i].duration_us <= 334_000, "{}", seg.parts[i].duration_us);
            parts.push(samples);
            media.extend_from_slice(part);
        }
    }
    for (i, pair) in parts.windows(2).enumerate() {
        let last_shown = pair[0].iter().map(|&(dts, _, off)| dts + off).max().unwrap();
        let first_shown = pair[1].iter().map(|&(dts, _, off)| dts + off).min().unwrap();
        assert!(first_shown > last_shown, "part {} is shown up to {last_shown}, part {} from {first_shown}", i, i + 1);
        // Decode times run on across parts.
        let (dts, duration, _) = *pair[0].last().unwrap();
        assert_eq!(pair[1][0].0, dts + duration, "tfdt of part {}", i + 1);
    }
    // The composition offsets are those of the source: pts = (dts + cts) × 90.
    let all: Vec<_> = parts.concat();
    assert_eq!(all.len(), 90);
    assert_eq!(all[0], (0, 3060, 67 * 90), "the IDR: shown 2 frames after it is decoded");

    let init = p.init_segment(0).unwrap();
    ffprobe_check(p, &init, &media, (320, 180, 1), g.video_frames, g.audio_frames);
}

#[test]
fn golden_live_edge() {
    // The same stream cut at 5 s: live state with a segment in progress.
    let mut p = Packager::new(HlsConfig::default(), "live");
    for tag in read_flv(FILE).unwrap() {
        let dts = u64::from(tag.timestamp_ms);
        if dts > 5000 {
            break;
        }
        let frame = match tag.tag_type {
            FlvTag::VIDEO => match parse_video_tag(tag.body).unwrap() {
                VideoTag::Config(c) => {
                    p.set_video_config(c);
                    continue;
                }
                VideoTag::Frame { keyframe, composition_time_ms, data } => {
                    Frame { track: Track::Video, dts, cts: composition_time_ms, keyframe, data }
                }
                VideoTag::EndOfSequence => continue,
            },
            FlvTag::AUDIO => match parse_audio_tag(tag.body).unwrap() {
                AudioTag::Config(c) => {
                    p.set_audio_config(c);
                    continue;
                }
                AudioTag::Frame(data) => Frame { track: Track::Audio, dts, cts: 0, keyframe: true, data },
            },
            _ => continue,
        };
        p.push(frame, T0 + dts);
    }
    let pos = p.position().unwrap();
    assert_eq!(pos.msn, 2, "segments 0 and 1 complete, 2 in progress");
    let next = Position { msn: 2, part: pos.part + 1 };
    assert_eq!(p.part(next.msn, next.part), Lookup::Pending);
    assert_eq!(p.segment(2), Lookup::Pending);
    assert_eq!(p.blocking_reload(next.msn, Some(next.part)), Reload::Wait);
    let ll = String::from_utf8(p.llhls_playlist().unwrap().to_vec()).unwrap();
    assert!(ll.ends_with(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"live/2.{}.m4s\"\n", next.part)));
    let plain = String::from_utf8(p.hls_playlist().unwrap().to_vec()).unwrap();
    assert_eq!(plain.matches("#EXTINF:").count(), 2);
}

/// `ffprobe` must read the stream back as H.264 of `format` (width, height, audio channels) + AAC
/// 48 kHz with every frame:
/// init + media as one fragmented MP4, and through both playlists (ffmpeg's HLS demuxer, with
/// the resources laid out as the URIs say).
fn ffprobe_check(
    p: &Packager,
    init: &Bytes,
    media: &[u8],
    format: (u32, u32, u32),
    video_frames: usize,
    audio_frames: usize,
) {
    let dir = std::env::temp_dir().join(format!("onair-hls-golden-{}-{}x{}", std::process::id(), format.0, format.1));
    let session = dir.join("golden");
    std::fs::create_dir_all(&session).unwrap();
    let mp4 = dir.join("stream.mp4");
    let mut all = init.to_vec();
    all.extend_from_slice(media);
    std::fs::write(&mp4, &all).unwrap();
    std::fs::write(session.join("init.mp4"), init).unwrap();
    for seg in &p.snapshot().segments {
        let Lookup::Ready(parts) = p.segment(seg.msn) else { panic!("segment {}", seg.msn) };
        std::fs::write(session.join(format!("{}.m4s", seg.msn)), parts.concat()).unwrap();
        for (i, part) in parts.iter().enumerate() {
            std::fs::write(session.join(format!("{}.{i}.m4s", seg.msn)), part).unwrap();
        }
    }
    std::fs::write(dir.join("llhls.m3u8"), p.llhls_playlist().unwrap()).unwrap();
    std::fs::write(dir.join("playlist.m3u8"), p.hls_playlist().unwrap()).unwrap();

    let probe = |input: &std::path::Path| {
        Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-show_entries"])
            .arg("stream=codec_name,width,height,sample_rate,channels,nb_read_frames")
            .args(["-of", "compact"])
            .arg(input)
            .output()
    };
    let results: Vec<_> =
        [mp4, dir.join("playlist.m3u8"), dir.join("llhls.m3u8")].iter().map(|f| (f.clone(), probe(f))).collect();
    let _ = std::fs::remove_dir_all(&dir);
    for (input, out) in results {
        let out = out.unwrap_or_else(|e| panic!("ffprobe must be installed (scripts/setup.sh --test): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = input.display();
        assert!(out.status.success(), "ffprobe {what} failed: {stderr}");
        assert!(stderr.trim().is_empty(), "ffprobe {what} complained: {stderr}");
        assert!(
            stdout.contains(&format!(
                "codec_name=h264|width={}|height={}|nb_read_frames={video_frames}",
                format.0, format.1
            )),
            "{what}: {stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "codec_name=aac|sample_rate=48000|channels={}|nb_read_frames={audio_frames}",
                format.2
            )),
            "{what}: {stdout}"
        );
    }
}
