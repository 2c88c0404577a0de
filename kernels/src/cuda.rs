//! CUDA C sources of the kernels (f32 and bf16 variants), embedded so a CUDA backend can
//! compile them at run time with NVRTC. Each source includes `common.cuh` by name; pass
//! [`CUDA_COMMON_HEADER`] to NVRTC as that in-memory header. They are compiled to PTX by
//! `tests/nvrtc.rs` when NVRTC is present; nothing launches them from Rust yet.

/// The helpers every source includes as `"common.cuh"`.
pub const CUDA_COMMON_HEADER: &str = include_str!("cuda/common.cuh");

/// (file name, source) of each kernel source in `src/cuda`.
pub const CUDA_SOURCES: &[(&str, &str)] = &[
    ("adamw.cu", include_str!("cuda/adamw.cu")),
    ("attention.cu", include_str!("cuda/attention.cu")),
    ("cross_entropy.cu", include_str!("cuda/cross_entropy.cu")),
    ("reduce.cu", include_str!("cuda/reduce.cu")),
    ("rms_norm.cu", include_str!("cuda/rms_norm.cu")),
    ("rope.cu", include_str!("cuda/rope.cu")),
    ("swiglu.cu", include_str!("cuda/swiglu.cu")),
];

/// The `extern "C" __global__` kernel names a source defines (its PTX entry points).
pub fn cuda_kernel_names(source: &str) -> Vec<&str> {
    source
        .split("extern \"C\" __global__ void ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}
