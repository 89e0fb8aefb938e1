//! AAC-LC → Opus, in-process, for WebRTC playback: browsers' WebRTC needs Opus, publishers send
//! AAC. One [`Transcoder`] per stream, fed the raw AAC frames in order; pure: no I/O, no async,
//! no clock.
//!
//! The pipeline:
//!
//! 1. **Decode** each AAC frame with Symphonia's AAC-LC decoder, configured from the stream's
//!    AudioSpecificConfig, to planar `f32` (1024 samples per channel).
//! 2. **Resample** to 48 kHz with rubato (FFT resampler for the standard AAC rates, a few ms of
//!    delay, trimmed; no-op at 48 kHz). See `resample.rs`.
//! 3. **Re-frame** through a FIFO: 1024-sample AAC frames become 960-sample (20 ms) Opus frames.
//! 4. **Encode** with libopus (the `opus` crate, a bundled static libopus): 48 kHz, stereo,
//!    [`Application::Audio`](opus::Application::Audio) — the source is programme audio (music
//!    and speech), which the `Audio` mode's analysis serves best; its 4 ms of extra look-ahead
//!    over `LowDelay` is small next to a WebRTC jitter buffer. VBR at 96 kb/s for stereo
//!    sources; complexity 5. A mono source is duplicated to both channels and the encoder is told
//!    the signal is mono (`force_channels`, 64 kb/s), so its packets carry one coded channel; any
//!    stereo Opus decoder (`opus/48000/2` in SDP) plays them as L = R.
//!
//! # Timing
//!
//! Opus packets follow the AAC timeline: within a *run* of continuous audio, a packet's
//! [`pts_ms`](OpusPacket::pts_ms) is the run's first AAC pts plus the samples emitted before it
//! (so consecutive packets are exactly 20 ms apart). The transcoder tracks where the next AAC
//! frame is expected (the run's first pts plus the source samples decoded so far) and compares
//! each frame's pts with it:
//!
//! * within ±half a frame: continuous (FLV timestamps are whole milliseconds, so ±1 ms is usual);
//! * late by at least half a frame and at most [`RESYNC_MS`]: the missing audio (a frame lost
//!   upstream, or a corrupt frame that [`push`](Transcoder::push) rejected) is filled with
//!   silence, so audio stays in sync with video and the packets stay continuous;
//! * early by more than half a frame (an overlap) up to [`RESYNC_MS`]: ignored; if it adds up
//!   past [`RESYNC_MS`], the next rule applies;
//! * more than [`RESYNC_MS`] away, either way (a gap in the publisher's audio, a timestamp
//!   jump, or clock drift adding up): **resync**. The current run is ended: the audio it still
//!   holds is emitted, padded with silence to a whole 20 ms packet, with the old run's pts; the
//!   decoder and resampler are reset; a new run starts at this frame's pts. So the first packet
//!   after a resync has exactly the pts of the AAC frame that started it.
//!
//! [`flush`](Transcoder::flush) ends the run the same way at the end of a stream (optional).
//!
//! Times saturate at `u64::MAX` ms: a publisher's timestamps never get near it, but a pts there
//! must not overflow (packets past it all get `u64::MAX`).
//!
//! A packet's pts is the time of its first input sample; libopus adds its look-ahead (6.5 ms in
//! `Audio` mode) to what a decoder plays, as every Opus encoder does (a WebRTC receiver does
//! not compensate it either).
//!
//! # Errors
//!
//! A frame that does not decode returns [`AudioError::CorruptFrame`]: that frame only. The
//! decoder is replaced by a fresh one (the failed frame may have left its state half-updated),
//! and the next frame is taken as usual; the lost frame's time is filled with silence (see
//! above). Packets the failing call had already completed (the end of a run that the refused
//! frame's pts ended) come out first from the next call. A damaged frame that happens to parse can leave the decoder in a state on which good
//! frames fail (a wrong channel-element layout), so a frame that fails is tried once more on a
//! fresh decoder before it is declared corrupt. Thousands of damaged frames (bit flips,
//! truncations, noise) are fed in the tests without a panic; a panic inside the decoder would be
//! caught and reported as a corrupt frame anyway.

mod resample;

use bytes::Bytes;
use onair_media::AacConfig;
use onair_media::aac::AOT_AAC_LC;
use symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::packet::PacketRef;
use symphonia::core::units::{Duration, Timestamp};
use symphonia::default::codecs::AacDecoder;

use crate::resample::{OUTPUT_RATE, To48k};

/// Opus' sample rate (RTP clock rate of `opus/48000/2`).
pub const OPUS_SAMPLE_RATE: u32 = OUTPUT_RATE;
/// Channels of the Opus stream (`opus/48000/2`).
pub const OPUS_CHANNELS: u8 = 2;
/// Samples (per channel) in every [`OpusPacket`]: 20 ms at 48 kHz.
pub const OPUS_FRAME_SAMPLES: u32 = 960;
/// Milliseconds in every [`OpusPacket`].
pub const OPUS_FRAME_MS: u64 = 20;
/// A jump of the AAC pts by more than this (either way) from where the next frame was expected
/// starts a new timeline (see the crate documentation).
pub const RESYNC_MS: u64 = 100;

/// Opus bitrate for a stereo source, bits per second.
const STEREO_BITRATE: i32 = 96_000;
/// Opus bitrate for a mono source, bits per second.
const MONO_BITRATE: i32 = 64_000;
/// libopus complexity, 0..=10 (10 is libopus' default): 5 costs about half as much, for a
/// quality difference that matters little at 64–96 kb/s.
const COMPLEXITY: i32 = 5;
/// The largest Opus packet (RFC 6716 §3.2.1: 1275 bytes per frame).
const MAX_PACKET: usize = 1275;
const FRAME: usize = OPUS_FRAME_SAMPLES as usize;

/// One 20 ms Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// The packet, as an RTP payload carries it (RFC 7587).
    pub data: Bytes,
    /// Presentation time of its first sample, in milliseconds, on the AAC timeline; exactly
    /// 20 ms after the previous packet's, except across a resync.
    pub pts_ms: u64,
    /// Samples per channel at 48 kHz: always [`OPUS_FRAME_SAMPLES`] (960).
    pub samples: u32,
}

/// Why the transcoder could not start, or could not take a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// The stream is not one this transcoder handles: only AAC-LC with 1024-sample frames, mono
    /// or stereo, is (no HE-AAC, no 960-sample frames, no multichannel). From [`Transcoder::new`].
    #[error("unsupported AAC stream: {0}")]
    Unsupported(String),
    /// This frame did not decode. The transcoder has reset its decoder and takes the next frame
    /// as usual; this frame's time is filled with silence when the next frame arrives.
    #[error("corrupt AAC frame at {pts_ms} ms: {reason}")]
    CorruptFrame { pts_ms: u64, reason: String },
    /// The resampler or the Opus encoder failed (not expected with the parameters used here).
    /// The transcoder has dropped the audio it held and starts a new timeline at the next frame.
    #[error("{stage} failed: {reason}")]
    Internal { stage: &'static str, reason: String },
}

/// A continuous stretch of audio, on one timeline.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// pts of the run's first AAC frame.
    start_ms: u64,
    /// Source-rate samples (per channel) fed in since the run started: decoded, or silence.
    in_samples: u64,
    /// 48 kHz samples put in the FIFO since the run started.
    produced: u64,
    /// 48 kHz samples encoded since the run started (a multiple of 960).
    encoded: u64,
}

impl Run {
    /// Where the next AAC frame is expected on the timeline, in ms.
    fn expected_ms(&self, in_rate: u32) -> u64 {
        self.start_ms.saturating_add(self.in_samples * 1000 / u64::from(in_rate))
    }

    /// 48 kHz samples corresponding to the source samples fed in so far.
    fn due_48k(&self, in_rate: u32) -> u64 {
        self.in_samples * u64::from(OUTPUT_RATE) / u64::from(in_rate)
    }
}

/// Transcodes one AAC-LC stream to 20 ms Opus packets (see the crate documentation).
///
/// `Send`, not `Sync`: one per stream, used from one task at a time.
pub struct Transcoder {
    decoder: AacDecoder,
    /// What the decoder was made from, to make a fresh one after an error.
    decoder_params: AudioCodecParameters,
    in_rate: u32,
    /// Source channels: 1 or 2.
    channels: usize,
    /// Source samples per AAC frame (1024).
    frame_len: u32,
    resampler: To48k,
    /// Decoded frame, planar (reused).
    decoded: Vec<Vec<f32>>,
    /// 48 kHz audio not yet encoded, planar, one vector per source channel.
    fifo: Vec<Vec<f32>>,
    /// One Opus frame, interleaved stereo (reused).
    interleaved: Vec<f32>,
    encoder: opus::Encoder,
    packet: Vec<u8>,
    run: Option<Run>,
    /// Packets completed by a call that then failed: returned first by the next call.
    unsent: Vec<OpusPacket>,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("in_rate", &self.in_rate)
            .field("channels", &self.channels)
            .field("buffered_48k", &self.fifo[0].len())
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// For AAC-LC with this AudioSpecificConfig: any sample rate (resampled to 48 kHz when it
    /// is not 48 kHz), mono or stereo, 1024-sample frames.
    pub fn new(config: &AacConfig) -> Result<Transcoder, AudioError> {
        let unsupported = |reason: String| AudioError::Unsupported(reason);
        if config.object_type != AOT_AAC_LC {
            return Err(unsupported(format!(
                "audio object type {} ({}); only AAC-LC (2) is supported",
                config.object_type,
                config.codec_string()
            )));
        }
        if !matches!(config.channels, 1 | 2) {
            return Err(unsupported(format!("{} channels; only mono and stereo are supported", config.channels)));
        }
        let frame_len = config.samples_per_frame();
        if frame_len != 1024 {
            return Err(unsupported(format!("{frame_len}-sample frames; only 1024 are supported")));
        }
        if !(1000..=192_000).contains(&config.sample_rate) {
            return Err(unsupported(format!("sample rate {} Hz", config.sample_rate)));
        }

        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC).with_extra_data(config.asc.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| unsupported(format!("AAC decoder: {e}")))?;

        let channels = usize::from(config.channels);
        let resampler = To48k::new(config.sample_rate, channels)
            .map_err(|reason| AudioError::Internal { stage: "resampler setup", reason })?;

        let encoder = new_encoder(channels)
            .map_err(|e| AudioError::Internal { stage: "Opus encoder setup", reason: e.to_string() })?;

        Ok(Transcoder {
            decoder,
            decoder_params: params,
            in_rate: config.sample_rate,
            channels,
            frame_len,
            resampler,
            decoded: vec![Vec::with_capacity(frame_len as usize); channels],
            fifo: vec![Vec::with_capacity(4 * FRAME); channels],
            interleaved: vec![0.0; 2 * FRAME],
            encoder,
            packet: vec![0; MAX_PACKET],
            run: None,
            unsent: Vec::new(),
        })
    }

    /// One raw AAC frame (no ADTS header) with its presentation time in ms; returns the Opus
    /// packets completed by it: 0, 1 or 2 at 32–48 kHz (a 1024-sample frame lasts 21.3–32 ms),
    /// up to 3 at 22.05 kHz, more at lower rates; on a resync, also the end of the previous run.
    /// An error concerns this frame only: the next call works as usual, and returns first the
    /// packets this one had completed before failing (the end of a run that its pts ended).
    pub fn push(&mut self, aac_frame: &[u8], pts_ms: u64) -> Result<Vec<OpusPacket>, AudioError> {
        let mut packets = std::mem::take(&mut self.unsent);
        let result = self.push_into(aac_frame, pts_ms, &mut packets);
        self.deliver(packets, result)
    }

    fn push_into(&mut self, aac_frame: &[u8], pts_ms: u64, packets: &mut Vec<OpusPacket>) -> Result<(), AudioError> {
        // Where does this frame sit on the current timeline?
        if let Some(run) = self.run {
            let expected = run.expected_ms(self.in_rate);
            let late_ms = i128::from(pts_ms) - i128::from(expected);
            let half_frame_ms = i128::from(self.frame_len * 500 / self.in_rate).max(1);
            if late_ms.unsigned_abs() > u128::from(RESYNC_MS) {
                self.end_run(packets)?;
            } else if late_ms >= half_frame_ms {
                // Audio went missing (a frame lost or rejected): fill its time with silence.
                let frames = (late_ms as u64 * u64::from(self.in_rate)).div_ceil(1000) as usize;
                self.feed_silence(frames)?;
            }
        }

        // Decode. A failure may be this frame's fault, or the decoder's: a damaged frame that
        // parsed earlier can have left it with a wrong channel layout. So on failure, try once
        // more on a fresh decoder; a frame that fails on that too is corrupt.
        if aac_frame.is_empty() {
            return Err(AudioError::CorruptFrame { pts_ms, reason: "empty frame".into() });
        }
        if let Err(first) = self.decode(aac_frame) {
            self.renew_decoder();
            if let Err(reason) = self.decode(aac_frame) {
                self.renew_decoder();
                let reason = if reason == first { reason } else { format!("{first} (then {reason})") };
                return Err(AudioError::CorruptFrame { pts_ms, reason });
            }
        }

        // Resample into the FIFO, then encode every whole 20 ms in it.
        let run = self.run.get_or_insert(Run { start_ms: pts_ms, in_samples: 0, produced: 0, encoded: 0 });
        run.in_samples += self.decoded[0].len() as u64;
        let before = self.fifo[0].len();
        let planes: Vec<&[f32]> = self.decoded.iter().map(Vec::as_slice).collect();
        if let Err(reason) = self.resampler.push(&planes, &mut self.fifo) {
            return Err(self.fail("resampler", reason));
        }
        self.note_produced(before);
        self.encode_ready(packets)
    }

    /// Ends the current run (e.g. at the end of the stream): returns the audio still held,
    /// padded with silence to a whole packet. Optional; the next [`push`](Self::push) starts a
    /// new timeline at its pts.
    pub fn flush(&mut self) -> Result<Vec<OpusPacket>, AudioError> {
        let mut packets = std::mem::take(&mut self.unsent);
        let result = self.end_run(&mut packets);
        self.deliver(packets, result)
    }

    /// `packets` when `result` is `Ok`; otherwise keeps them for the next call and returns the
    /// error, so that packets completed before a failure are not lost.
    fn deliver(
        &mut self,
        packets: Vec<OpusPacket>,
        result: Result<(), AudioError>,
    ) -> Result<Vec<OpusPacket>, AudioError> {
        match result {
            Ok(()) => Ok(packets),
            Err(e) => {
                self.unsent = packets;
                Err(e)
            }
        }
    }

    /// Emits what the run still holds, padded to a whole packet, and resets the pipeline.
    fn end_run(&mut self, packets: &mut Vec<OpusPacket>) -> Result<(), AudioError> {
        let Some(run) = self.run else { return Ok(()) };
        // Get the resampler's held-back tail out, exactly up to the run's duration.
        let due = run.due_48k(self.in_rate);
        if run.produced < due {
            let before = self.fifo[0].len();
            if let Err(reason) = self.resampler.drain((due - run.produced) as usize, &mut self.fifo) {
                return Err(self.fail("resampler", reason));
            }
            self.note_produced(before);
        }
        if let Some(run) = self.run.as_mut()
            && run.produced > due
        {
            let keep = self.fifo[0].len().saturating_sub((run.produced - due) as usize);
            for plane in &mut self.fifo {
                plane.truncate(keep);
            }
            run.produced = due;
        }
        let partial = self.fifo[0].len() % FRAME;
        if partial != 0 {
            for plane in &mut self.fifo {
                plane.resize(plane.len() + FRAME - partial, 0.0);
            }
        }
        self.encode_ready(packets)?;
        self.reset_pipeline();
        Ok(())
    }

    /// Feeds `frames` source-rate frames of silence, as if decoded.
    fn feed_silence(&mut self, frames: usize) -> Result<(), AudioError> {
        if let Some(run) = self.run.as_mut() {
            run.in_samples += frames as u64;
        }
        let before = self.fifo[0].len();
        if let Err(reason) = self.resampler.push_silence(frames, &mut self.fifo) {
            return Err(self.fail("resampler", reason));
        }
        self.note_produced(before);
        Ok(())
    }

    fn note_produced(&mut self, fifo_len_before: usize) {
        if let Some(run) = self.run.as_mut() {
            run.produced += (self.fifo[0].len() - fifo_len_before) as u64;
        }
    }

    /// Encodes every whole 20 ms in the FIFO.
    fn encode_ready(&mut self, packets: &mut Vec<OpusPacket>) -> Result<(), AudioError> {
        let whole = self.fifo[0].len() / FRAME;
        if whole == 0 {
            return Ok(());
        }
        for k in 0..whole {
            let at = k * FRAME;
            match self.channels {
                1 => {
                    for (i, &v) in self.fifo[0][at..at + FRAME].iter().enumerate() {
                        self.interleaved[2 * i] = v;
                        self.interleaved[2 * i + 1] = v;
                    }
                }
                _ => {
                    let (left, right) = (&self.fifo[0][at..at + FRAME], &self.fifo[1][at..at + FRAME]);
                    for (i, (&l, &r)) in left.iter().zip(right).enumerate() {
                        self.interleaved[2 * i] = l;
                        self.interleaved[2 * i + 1] = r;
                    }
                }
            }
            let len = match self.encoder.encode_float(&self.interleaved, &mut self.packet) {
                Ok(len) => len,
                Err(e) => return Err(self.fail("Opus encoder", e.to_string())),
            };
            let Some(run) = self.run.as_mut() else {
                return Err(self.fail("transcoder", "audio without a timeline".into()));
            };
            packets.push(OpusPacket {
                data: Bytes::copy_from_slice(&self.packet[..len]),
                pts_ms: run.start_ms.saturating_add(run.encoded * 1000 / u64::from(OUTPUT_RATE)),
                samples: OPUS_FRAME_SAMPLES,
            });
            run.encoded += FRAME as u64;
        }
        for plane in &mut self.fifo {
            plane.drain(..whole * FRAME);
        }
        Ok(())
    }

    /// Drops all held audio and state but the encoder's: the next frame starts a new run.
    fn reset_pipeline(&mut self) {
        self.renew_decoder();
        self.resampler.reset();
        for plane in &mut self.fifo {
            plane.clear();
        }
        self.run = None;
    }

    /// Decodes one frame into `self.decoded`.
    ///
    /// The frame comes from the publisher, as is, and Symphonia's decoder is young: a panic in it
    /// (none is known: the tests feed it thousands of damaged frames) is caught and reported as
    /// a decoding failure, which renews the decoder, rather than taking the stream's task down.
    fn decode(&mut self, aac_frame: &[u8]) -> Result<(), String> {
        let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(u64::from(self.frame_len)), aac_frame);
        let (decoder, decoded, channels) = (&mut self.decoder, &mut self.decoded, self.channels);
        let decode = move || -> Result<(), String> {
            let buf = decoder.decode_ref(&packet).map_err(|e| e.to_string())?;
            if buf.num_planes() != channels || buf.frames() == 0 {
                return Err(format!("decoded {} channels × {} samples", buf.num_planes(), buf.frames()));
            }
            buf.copy_to_vecs_planar::<f32>(decoded);
            Ok(())
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
            .unwrap_or_else(|_| Err("the AAC decoder panicked".to_string()))
    }

    /// Replaces the decoder with a fresh one. Symphonia's `reset()` only clears the overlap
    /// buffers: a damaged frame that decoded "successfully" can leave a wrong channel-element
    /// layout behind, on which every later frame fails.
    fn renew_decoder(&mut self) {
        match AacDecoder::try_new(&self.decoder_params, &AudioDecoderOptions::default()) {
            Ok(decoder) => self.decoder = decoder,
            // It was made from the same parameters in `new`: cannot fail; reset at least.
            Err(_) => self.decoder.reset(),
        }
    }

    fn fail(&mut self, stage: &'static str, reason: String) -> AudioError {
        self.reset_pipeline();
        AudioError::Internal { stage, reason }
    }
}

fn new_encoder(channels: usize) -> Result<opus::Encoder, opus::Error> {
    let mut encoder = opus::Encoder::new(OUTPUT_RATE, opus::Channels::Stereo, opus::Application::Audio)?;
    encoder.set_complexity(COMPLEXITY)?;
    if channels == 1 {
        encoder.set_force_channels(Some(opus::Channels::Mono))?;
        encoder.set_bitrate(opus::Bitrate::Bits(MONO_BITRATE))?;
    } else {
        encoder.set_bitrate(opus::Bitrate::Bits(STEREO_BITRATE))?;
    }
    Ok(encoder)
}

#[cfg(test)]
mod tests;
