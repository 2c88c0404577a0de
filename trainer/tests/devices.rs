//! Device selection and precision: asking for CUDA never panics and never falls back to the
//! CPU, and bf16 mixed precision is refused where it cannot run.

mod common;

use candle_core::{DType, Device};
use wsdscope_trainer::engine::device;
use wsdscope_trainer::model::MiniCpm;
use wsdscope_trainer::{Precision, Trainer};

#[test]
fn cuda_is_a_cuda_device_or_a_clear_error() {
    // Without the cuda feature, or without a driver or GPU, this is an error saying so.
    match device("cuda:0") {
        Ok(d) => assert!(d.is_cuda(), "cuda:0 fell back to {d:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("--device cuda:0: CUDA is unavailable"), "{m}");
        }
    }
    // Plain `cuda` is this process's GPU (GPU 0 outside a launcher of several ranks).
    match device("cuda") {
        Ok(d) => assert!(d.is_cuda(), "cuda fell back to {d:?}"),
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("--device cuda: CUDA is unavailable"), "{m}");
        }
    }
    let m = device("cuda:4096").unwrap_err().to_string();
    assert!(m.contains("--device cuda:4096: CUDA is unavailable"), "{m}");
    assert!(
        device("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("use cpu, cuda or cuda:N")
    );
}

#[test]
fn bf16_needs_a_cuda_device() {
    let mut cfg = common::small_run(4);
    cfg.precision = Precision::Bf16;
    let m = cfg.validate().unwrap_err().to_string();
    assert!(
        m.contains("--precision bf16 is not allowed on --device cpu") && m.contains("cuda:N"),
        "{m}"
    );
    let m = Trainer::new(cfg)
        .err()
        .expect("bf16 on the CPU")
        .to_string();
    assert!(m.contains("--precision bf16"), "{m}");

    let mut model =
        MiniCpm::init(&common::small_run(4).model, 16, 0, &Device::Cpu, DType::F32).unwrap();
    let m = model
        .set_compute_dtype(DType::BF16)
        .unwrap_err()
        .to_string();
    assert!(m.contains("CUDA device"), "{m}");
    model.set_compute_dtype(DType::F32).unwrap();
}
