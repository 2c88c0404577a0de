//! The launch descriptions checked without running them: argument bytes, C struct layouts,
//! geometry, and sizes the kernels cannot take.

use super::*;
use crate::error::Error;

/// Records launches instead of running them.
#[derive(Default)]
struct Recorder {
    launches: Vec<Launch>,
    next: DevPtr,
}

impl Gpu for Recorder {
    fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error> {
        self.next += 0x1000 + bytes as u64;
        Ok(self.next)
    }
    fn launch(&mut self, l: &Launch) -> Result<(), Error> {
        self.launches.push(l.clone());
        Ok(())
    }
}

#[test]
fn params_point_at_each_arguments_bytes() {
    let l = Launch::new("x.cu", "k".into(), (1, 1), 32)
        .arg(Arg::Ptr(0xdead_beef))
        .arg(Arg::Int(-7))
        .arg(Arg::Float(1.5))
        .arg(Arg::Size(1 << 40));
    let p = l.params();
    // SAFETY: each pointer points at the argument of its C type, alive in `l`.
    unsafe {
        assert_eq!(*(p[0] as *const u64), 0xdead_beef);
        assert_eq!(*(p[1] as *const i32), -7);
        assert_eq!(*(p[2] as *const f32), 1.5);
        assert_eq!(*(p[3] as *const u64), 1 << 40);
    }
}

#[test]
fn the_c_structs_have_the_c_layout() {
    assert_eq!(std::mem::size_of::<AttnShape>(), 20);
    assert_eq!(std::mem::size_of::<AdamWParams>(), 32);
}

#[test]
fn row_kernels_get_whole_warps_and_one_block_per_row() {
    let mut r = Recorder::default();
    rms_norm_fwd(&mut r, Elem::Bf16, 1, 2, 3, 4, 5, 1000, 1e-5).unwrap();
    let l = &r.launches[0];
    assert_eq!(l.kernel, "rms_norm_fwd_bf16");
    assert_eq!((l.grid, l.block), ((5, 1, 1), (1024, 1, 1)));
    assert_eq!(row_block(1), 32);
    assert_eq!(row_block(33), 64);
}

#[test]
fn sizes_beyond_the_kernels_int_are_refused() {
    let mut r = Recorder::default();
    let err = rms_norm_fwd(&mut r, Elem::F32, 1, 2, 3, 4, 1, 1 << 31, 1e-5).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the kernels' int range"),
        "{err}"
    );
    let dims = AttnDims {
        b: 1,
        h: 6,
        hkv: 4,
        t: 8,
        d: 64,
        scale: 0.1,
    };
    let err = attention_fwd(&mut r, Elem::F32, [1, 2, 3], 4, 5, dims).unwrap_err();
    assert!(err.to_string().contains("evenly"), "{err}");
    assert!(r.launches.is_empty());
}
