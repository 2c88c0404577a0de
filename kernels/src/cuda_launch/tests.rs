//! Compiling every source as at run time, and asking for a device without one.

use super::cuda_device_name;
use super::modules::compile_cubin;
use crate::cuda::CUDA_SOURCES;

/// Every source compiles to a CUBIN exactly as at run time (the common header inlined,
/// no CUDA include directory), for the H100/H200 generation. Needs only NVRTC, which a
/// CUDA build links.
#[test]
fn every_source_compiles_to_a_cubin() {
    for (file, src) in CUDA_SOURCES {
        let cubin = compile_cubin(file, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "{file}: not an ELF image");
        for k in crate::cuda_kernel_names(src) {
            let name = k.as_bytes();
            assert!(
                cubin.windows(name.len()).any(|w| w == name),
                "{file}: kernel {k} missing from the CUBIN"
            );
        }
    }
}

/// Without a usable driver (none, or the build-time stub), asking for a device is an
/// error that says why, not a panic.
#[test]
fn no_driver_is_an_error_not_a_panic() {
    if let Err(why) = cuda_device_name(0) {
        assert!(why.contains("CUDA"), "{why}");
    }
    let Err(why) = cuda_device_name(usize::MAX / 2) else {
        panic!("a device with that ordinal cannot exist");
    };
    assert!(why.contains("CUDA"), "{why}");
}
