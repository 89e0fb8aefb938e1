//! Sample-rate conversion to 48 kHz with [`rubato`], its start-up delay trimmed off.
//!
//! * Every standard AAC rate (96 k … 7.35 k) goes through rubato's synchronous FFT resampler
//!   ([`Fft`]): exact rational ratio, cheap, and with a delay of a few milliseconds (half an FFT
//!   block of ~256 frames: 3.3 ms at 44.1 kHz).
//! * A rate whose exact ratio to 48 kHz would need a long FFT block (an explicit, non-standard
//!   `samplingFrequency` such as 44 101 Hz) goes through rubato's asynchronous sinc resampler
//!   instead, whose delay does not depend on the ratio.
//! * 48 kHz passes through untouched.
//!
//! The output is trimmed by the resampler's delay, so output frame *n* is the input's time
//! `n / 48000` s: the timeline of the 48 kHz signal is the timeline of the input.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// The output rate: Opus' native rate.
pub(crate) const OUTPUT_RATE: u32 = 48_000;

/// Input frames handed to the resampler at a time (one AAC frame).
const CHUNK: usize = 1024;

/// Above this many input frames per FFT block (`in_rate / gcd(in_rate, 48000)`), the FFT
/// resampler's delay would exceed ~10 ms: use the sinc resampler instead.
const MAX_FFT_BLOCK: usize = 512;

/// Converts planar `f32` PCM at one rate to planar `f32` at 48 kHz.
pub(crate) struct To48k {
    /// `None` when the input is already at 48 kHz.
    inner: Option<Box<dyn Resampler<f32>>>,
    channels: usize,
    /// Input not yet handed to the resampler (per channel).
    pending: Vec<Vec<f32>>,
    /// The resampler's output buffer (per channel).
    scratch: Vec<Vec<f32>>,
    /// Leading output frames still to drop: the resampler's delay, after a start or a reset.
    to_trim: usize,
}

impl To48k {
    pub(crate) fn new(in_rate: u32, channels: usize) -> Result<Self, String> {
        if in_rate == 0 || channels == 0 {
            return Err(format!("{in_rate} Hz, {channels} channels"));
        }
        let inner: Option<Box<dyn Resampler<f32>>> = if in_rate == OUTPUT_RATE {
            None
        } else {
            let (rate_in, rate_out) = (in_rate as usize, OUTPUT_RATE as usize);
            let block_in = rate_in / gcd(rate_in, rate_out);
            if block_in <= MAX_FFT_BLOCK {
                let fft =
                    Fft::<f32>::new(rate_in, rate_out, CHUNK, channels, FixedSync::Input).map_err(|e| e.to_string())?;
                Some(Box::new(fft))
            } else {
                let params = SincInterpolationParameters {
                    sinc_len: 128,
                    f_cutoff: None,
                    oversampling_factor: 128,
                    interpolation: SincInterpolationType::Cubic,
                    window: WindowFunction::BlackmanHarris2,
                };
                let ratio = f64::from(OUTPUT_RATE) / f64::from(in_rate);
                let sinc = Async::<f32>::new_sinc(ratio, 1.0, &params, CHUNK, channels, FixedAsync::Input)
                    .map_err(|e| e.to_string())?;
                Some(Box::new(sinc))
            }
        };
        let scratch_len = inner.as_ref().map_or(0, |r| r.output_frames_max());
        let to_trim = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(To48k {
            inner,
            channels,
            pending: vec![Vec::with_capacity(2 * CHUNK); channels],
            scratch: vec![vec![0.0; scratch_len]; channels],
            to_trim,
        })
    }

    /// The number of channels in and out.
    #[cfg(test)]
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// Takes `input` (one slice per channel, all of the same length) and appends whatever
    /// 48 kHz output is ready to `out` (one vector per channel).
    pub(crate) fn push(&mut self, input: &[&[f32]], out: &mut [Vec<f32>]) -> Result<(), String> {
        debug_assert_eq!(input.len(), self.channels);
        if self.inner.is_none() {
            for (o, i) in out.iter_mut().zip(input) {
                o.extend_from_slice(i);
            }
            return Ok(());
        }
        for (p, i) in self.pending.iter_mut().zip(input) {
            p.extend_from_slice(i);
        }
        self.process_pending(out)
    }

    /// Like [`push`](Self::push) with `frames` frames of silence.
    pub(crate) fn push_silence(&mut self, frames: usize, out: &mut [Vec<f32>]) -> Result<(), String> {
        if self.inner.is_none() {
            for o in out.iter_mut() {
                o.resize(o.len() + frames, 0.0);
            }
            return Ok(());
        }
        for p in &mut self.pending {
            p.resize(p.len() + frames, 0.0);
        }
        self.process_pending(out)
    }

    /// Pushes the input still held back (pending, and inside the resampler's delay line) out,
    /// followed by silence, until at least `frames` more frames have been appended to `out`.
    /// The caller truncates what it does not need, then [`reset`](Self::reset)s.
    pub(crate) fn drain(&mut self, frames: usize, out: &mut [Vec<f32>]) -> Result<(), String> {
        if self.inner.is_none() {
            return self.push_silence(frames, out);
        }
        let target = out[0].len() + frames;
        // Each round feeds at least one chunk; a chunk gives out at least a few hundred frames
        // once the delay line is full, so this ends in a handful of rounds; bounded anyway.
        for _ in 0..64 {
            if out[0].len() >= target {
                return Ok(());
            }
            let need = self.inner.as_ref().map_or(CHUNK, |r| r.input_frames_next());
            let missing = need.saturating_sub(self.pending[0].len()).max(1);
            for p in &mut self.pending {
                p.resize(p.len() + missing, 0.0);
            }
            self.process_pending(out)?;
        }
        Err(format!("the resampler gave no output while draining {frames} frames"))
    }

    /// Forgets all state: pending input, the delay line, and trims the delay again.
    pub(crate) fn reset(&mut self) {
        for p in &mut self.pending {
            p.clear();
        }
        if let Some(r) = self.inner.as_mut() {
            r.reset();
            self.to_trim = r.output_delay();
        }
    }

    fn process_pending(&mut self, out: &mut [Vec<f32>]) -> Result<(), String> {
        let Some(resampler) = self.inner.as_mut() else { return Ok(()) };
        loop {
            let need = resampler.input_frames_next();
            let available = self.pending[0].len();
            if available < need {
                return Ok(());
            }
            let out_max = resampler.output_frames_max();
            for s in &mut self.scratch {
                if s.len() < out_max {
                    s.resize(out_max, 0.0);
                }
            }
            let input =
                SequentialSliceOfVecs::new(&self.pending, self.channels, available).map_err(|e| e.to_string())?;
            let mut output =
                SequentialSliceOfVecs::new_mut(&mut self.scratch, self.channels, out_max).map_err(|e| e.to_string())?;
            let (consumed, produced) =
                resampler.process_into_buffer(&input, &mut output, None::<&Indexing>).map_err(|e| e.to_string())?;
            for p in &mut self.pending {
                p.drain(..consumed);
            }
            let trim = self.to_trim.min(produced);
            self.to_trim -= trim;
            for (o, s) in out.iter_mut().zip(&self.scratch) {
                o.extend_from_slice(&s[trim..produced]);
            }
            if consumed == 0 {
                return Ok(());
            }
        }
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::TAU;

    fn sine(rate: u32, freq: f32, frames: usize, phase0: usize) -> Vec<f32> {
        (phase0..phase0 + frames).map(|n| 0.5 * (TAU * freq * n as f32 / rate as f32).sin()).collect()
    }

    /// Power of `freq` in `x` (Goertzel), normalised to the signal's power.
    fn tone_fraction(x: &[f32], rate: f32, freq: f32) -> f32 {
        let w = TAU * freq / rate;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &v in x {
            let s = v + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        let energy: f32 = x.iter().map(|v| v * v).sum();
        2.0 * power / (x.len() as f32 * energy)
    }

    /// Feeds one second of a 1 kHz sine in uneven pieces, then checks the count of output
    /// frames, the frequency, the amplitude and the alignment (no delay left, to within
    /// `tolerance` of amplitude 0.5: 0.01 is 0.15 samples at 48 kHz).
    fn check_rate(in_rate: u32, channels: usize, tolerance: f32) {
        let mut r = To48k::new(in_rate, channels).unwrap();
        assert_eq!(r.channels(), channels);
        let total = in_rate as usize;
        let mut out = vec![Vec::new(); channels];
        let mut fed = 0;
        for piece in [1024usize, 1000, 3000, 17, 1024].iter().cycle() {
            let n = (*piece).min(total - fed);
            let x = sine(in_rate, 1000.0, n, fed);
            let planes: Vec<&[f32]> = (0..channels).map(|_| &x[..]).collect();
            r.push(&planes, &mut out).unwrap();
            fed += n;
            if fed == total {
                break;
            }
        }
        let have = out[0].len();
        assert!(have <= 48_000, "{in_rate}: {have} frames out");
        r.drain(48_000 - have, &mut out).unwrap();
        assert!(out[0].len() >= 48_000);
        for plane in &mut out {
            plane.truncate(48_000);
        }
        for plane in &out {
            // Away from the edges, the output is the same sine sampled at 48 kHz, in phase:
            // no delay left, no gain.
            let expected = sine(48_000, 1000.0, 48_000, 0);
            let mid = &plane[4800..43_200];
            let err = mid.iter().zip(&expected[4800..43_200]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < tolerance, "{in_rate} Hz: max error {err}");
            assert!(tone_fraction(mid, 48_000.0, 1000.0) > 0.99, "{in_rate} Hz");
        }
        // A reset starts afresh, with the delay trimmed again.
        r.reset();
        let mut again = vec![Vec::new(); channels];
        let x = sine(in_rate, 1000.0, total / 2, 0);
        let planes: Vec<&[f32]> = (0..channels).map(|_| &x[..]).collect();
        r.push(&planes, &mut again).unwrap();
        let n = again[0].len().min(24_000);
        let err = again[0][2400..n - 2400]
            .iter()
            .zip(&sine(48_000, 1000.0, n, 0)[2400..n - 2400])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < tolerance, "{in_rate} Hz after reset: max error {err}");
    }

    #[test]
    fn passthrough_at_48k() {
        check_rate(48_000, 2, 1e-6);
    }

    #[test]
    fn standard_rates_use_fft() {
        for rate in [44_100, 32_000, 24_000, 22_050, 16_000, 11_025, 8_000, 96_000] {
            check_rate(rate, 1, 0.01);
        }
        check_rate(44_100, 2, 0.01);
    }

    #[test]
    fn odd_rate_uses_sinc() {
        assert!(44_101 / gcd(44_101, 48_000) > MAX_FFT_BLOCK);
        // The sinc resampler's delay is a whole number of frames, the true one is not: up to
        // half a frame off (0.033 in amplitude).
        check_rate(44_101, 2, 0.04);
    }

    #[test]
    fn silence_counts_as_input() {
        let mut r = To48k::new(24_000, 1).unwrap();
        let mut out = vec![Vec::new()];
        r.push_silence(24_000, &mut out).unwrap();
        let have = out[0].len();
        r.drain(48_000 - have, &mut out).unwrap();
        assert!(out[0].len() >= 48_000);
        assert!(out[0].iter().all(|v| v.abs() < 1e-6));
    }
}
