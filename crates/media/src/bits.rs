//! A big-endian bit reader with Exp-Golomb codes, shared by the SPS and ASC parsers.

use crate::{MediaError, Result};

/// Reads bits MSB-first from a byte slice. Every read is bounds-checked and returns
/// [`MediaError::Truncated`] when the data runs out.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    fn total_bits(&self) -> usize {
        self.data.len().saturating_mul(8)
    }

    pub(crate) fn bits_left(&self) -> usize {
        self.total_bits().saturating_sub(self.pos)
    }

    fn truncated(&self, bits: usize) -> MediaError {
        MediaError::Truncated {
            what: self.what,
            need: self.pos.saturating_add(bits).div_ceil(8),
            have: self.data.len(),
        }
    }

    pub(crate) fn read_bit(&mut self) -> Result<bool> {
        let byte = self.data.get(self.pos / 8).copied().ok_or_else(|| self.truncated(1))?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` bits (`n <= 32`) as an unsigned number.
    pub(crate) fn read_bits(&mut self, n: u32) -> Result<u32> {
        debug_assert!(n <= 32);
        if (n as usize) > self.bits_left() {
            return Err(self.truncated(n as usize));
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.read_bit()?);
        }
        // `n <= 32`, so the value fits; the fallback is never taken.
        Ok(u32::try_from(value).unwrap_or(u32::MAX))
    }

    pub(crate) fn read_u8(&mut self, n: u32) -> Result<u8> {
        debug_assert!(n <= 8);
        Ok(self.read_bits(n)? as u8)
    }

    pub(crate) fn skip_bits(&mut self, n: usize) -> Result<()> {
        if n > self.bits_left() {
            return Err(self.truncated(n));
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb code, `ue(v)` (at most 31 leading zero bits, so the value fits in u32).
    pub(crate) fn read_ue(&mut self) -> Result<u32> {
        let mut leading_zeros = 0u32;
        while !self.read_bit()? {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(MediaError::Invalid {
                    what: self.what,
                    reason: "Exp-Golomb code longer than 32 bits".into(),
                });
            }
        }
        let suffix = u64::from(self.read_bits(leading_zeros)?);
        let value = ((1u64 << leading_zeros) - 1) + suffix;
        // At most 2^32 - 2.
        u32::try_from(value)
            .map_err(|_| MediaError::Invalid { what: self.what, reason: "Exp-Golomb value out of range".into() })
    }

    /// Signed Exp-Golomb code, `se(v)`.
    pub(crate) fn read_se(&mut self) -> Result<i32> {
        let k = i64::from(self.read_ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        // |value| <= 2^31 - 1 because k <= 2^32 - 2.
        i32::try_from(value)
            .map_err(|_| MediaError::Invalid { what: self.what, reason: "signed Exp-Golomb value out of range".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_width_fields() {
        let mut r = BitReader::new(&[0b1010_1100, 0xff, 0x00, 0x01], "t");
        assert!(r.read_bit().unwrap());
        assert_eq!(r.read_bits(3).unwrap(), 0b010);
        assert_eq!(r.read_u8(4).unwrap(), 0b1100);
        assert_eq!(r.read_bits(24).unwrap(), 0xff_00_01);
        assert_eq!(r.bits_left(), 0);
        assert!(matches!(r.read_bit(), Err(MediaError::Truncated { need: 5, have: 4, .. })));
    }

    #[test]
    fn read_32_bits() {
        let mut r = BitReader::new(&[0xde, 0xad, 0xbe, 0xef], "t");
        assert_eq!(r.read_bits(32).unwrap(), 0xdead_beef);
    }

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 | 0001000 -> ue 0,1,2,3,4,7
        let bits = "1010011001000010100010000";
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let mut r = BitReader::new(&bytes, "t");
        let got: Vec<u32> = (0..6).map(|_| r.read_ue().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 7]);

        let mut r = BitReader::new(&bytes, "t");
        let got: Vec<i32> = (0..6).map(|_| r.read_se().unwrap()).collect();
        assert_eq!(got, [0, 1, -1, 2, -2, 4]);
    }

    #[test]
    fn exp_golomb_extremes() {
        // 31 zeros, a one, 31 ones: 2^32 - 2.
        let mut bytes = vec![0u8; 3];
        bytes.extend_from_slice(&[0x01, 0xff, 0xff, 0xff, 0xfe]);
        let mut r = BitReader::new(&bytes, "t");
        assert_eq!(r.read_ue().unwrap(), u32::MAX - 1);
        // 32 zeros: rejected, not overflowed.
        let mut r = BitReader::new(&[0, 0, 0, 0, 0xff], "t");
        assert!(matches!(r.read_ue(), Err(MediaError::Invalid { .. })));
        // All zeros and then the end.
        let mut r = BitReader::new(&[0, 0], "t");
        assert!(matches!(r.read_ue(), Err(MediaError::Truncated { .. })));
        // The largest se values.
        let mut r = BitReader::new(&bytes, "t");
        assert_eq!(r.read_se().unwrap(), -(i32::MAX));
    }

    #[test]
    fn skip_checks_bounds() {
        let mut r = BitReader::new(&[0xff], "t");
        r.skip_bits(7).unwrap();
        assert!(r.skip_bits(2).is_err());
        assert!(r.read_bit().unwrap());
    }
}
