//! Host buffers the CPU executor's kernels read and write: 8-byte aligned bytes whose
//! address is the kernels' device pointer, filled from and read back as f32 (stored as f32
//! or as bf16, rounded to nearest even as candle and the kernels round), u32 or f64.

use half::bf16;

use crate::launch::{DevPtr, Elem};

/// An 8-byte aligned byte buffer.
pub struct HostBuf {
    words: Vec<u64>,
    bytes: usize,
}

impl HostBuf {
    /// `bytes` of zeros.
    pub fn zeros(bytes: usize) -> Self {
        Self {
            words: vec![0; bytes.div_ceil(8).max(1)],
            bytes,
        }
    }

    /// `bytes` whose contents the caller must not rely on: filled with a NaN pattern, so a
    /// kernel that reads what it should have written first shows it.
    pub fn garbage(bytes: usize) -> Self {
        Self {
            words: vec![0x7fc0_0001_7fc0_0001; bytes.div_ceil(8).max(1)],
            bytes,
        }
    }

    /// `xs` stored as `e`.
    pub fn from_f32(xs: &[f32], e: Elem) -> Self {
        let mut b = Self::zeros(xs.len() * e.size());
        match e {
            Elem::F32 => b.bytes_mut().copy_from_slice(as_bytes(xs)),
            Elem::Bf16 => {
                let v: Vec<u16> = xs.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
                b.bytes_mut().copy_from_slice(as_bytes(&v));
            }
        }
        b
    }

    /// A copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = Self::zeros(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    pub fn from_u32(xs: &[u32]) -> Self {
        let mut b = Self::zeros(xs.len() * 4);
        b.bytes_mut().copy_from_slice(as_bytes(xs));
        b
    }

    pub fn from_f64(xs: &[f64]) -> Self {
        let mut b = Self::zeros(xs.len() * 8);
        b.bytes_mut().copy_from_slice(as_bytes(xs));
        b
    }

    /// The buffer's address: the kernels' pointer to it.
    pub fn ptr(&mut self) -> DevPtr {
        self.words.as_mut_ptr() as DevPtr
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `bytes` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.bytes) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.bytes) }
    }

    /// The contents as `e` values, widened to f32.
    pub fn to_f32(&self, e: Elem) -> Vec<f32> {
        let b = self.bytes();
        match e {
            Elem::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Elem::Bf16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32())
                .collect(),
        }
    }

    pub fn to_f64(&self) -> Vec<f64> {
        self.bytes()
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }

    pub fn to_i32(&self) -> Vec<i32> {
        self.bytes()
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

fn as_bytes<T: Copy>(xs: &[T]) -> &[u8] {
    // SAFETY: T is a plain number type (f32, u16, u32, f64): every byte is initialised.
    unsafe { std::slice::from_raw_parts(xs.as_ptr().cast(), std::mem::size_of_val(xs)) }
}

/// `x` rounded to bf16 and back (what a bf16 buffer holds of it).
#[allow(dead_code)]
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_a_round_trip_in_each_element_type() {
        let xs = [1.0f32, -2.5, 3.0e-3, 65504.0];
        assert_eq!(HostBuf::from_f32(&xs, Elem::F32).to_f32(Elem::F32), xs);
        let b = HostBuf::from_f32(&xs, Elem::Bf16);
        assert_eq!(b.len_bytes(), 8);
        let back = b.to_f32(Elem::Bf16);
        for (x, y) in xs.iter().zip(&back) {
            assert_eq!(*y, round_bf16(*x));
            assert!((x - y).abs() <= x.abs() / 256.0);
        }
        assert_eq!(HostBuf::from_f64(&[1.5, -2.0]).to_f64(), [1.5, -2.0]);
    }
}
