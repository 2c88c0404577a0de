//! The CPU executor's CUDA execution model, intrinsic by intrinsic: small kernels written for
//! this test (compiled exactly as the project's sources are) exercise every warp shuffle mode
//! and width, votes, block barriers over shared memory, atomics across blocks running in
//! parallel, the thread/block indices of a 3-D launch, and the errors a GPU would hang on.

mod common;

use wsdscope_kernels::emu::{Executor, HostBuf, Sources};
use wsdscope_kernels::launch::{Arg, Launch};

const MODEL: &str = r#"
#include "common.cuh"

// out[10 * t + k]: shuffles of lane ids (full width, a double too), then width 8, then votes.
extern "C" __global__ void shuffles(int* out) {
    const int t = threadIdx.x, lane = t & 31;
    int* o = out + 10 * t;
    o[0] = __shfl_sync(WSD_FULL_MASK, lane, 5);
    o[1] = __shfl_up_sync(WSD_FULL_MASK, lane, 3);
    o[2] = __shfl_down_sync(WSD_FULL_MASK, lane, 3);
    o[3] = __shfl_xor_sync(WSD_FULL_MASK, lane, 6);
    o[4] = (int)(__shfl_xor_sync(WSD_FULL_MASK, (double)lane * 0.5, 1) * 2.0);
    o[5] = __shfl_sync(WSD_FULL_MASK, lane, 13, 8);
    o[6] = __shfl_up_sync(WSD_FULL_MASK, lane, 3, 8);
    o[7] = __shfl_down_sync(WSD_FULL_MASK, lane, 3, 8);
    o[8] = __shfl_xor_sync(WSD_FULL_MASK, lane, 9, 8);
    __syncwarp();
    o[9] = (int)__ballot_sync(WSD_FULL_MASK, lane % 3 == 0) ^ (__any_sync(WSD_FULL_MASK, lane == 7) ? 1 << 30 : 0)
           ^ (__all_sync(WSD_FULL_MASK, lane < 32) ? 1 << 29 : 0);
}

// Each thread writes its id to shared memory; after the barrier it reads its neighbour's.
extern "C" __global__ void neighbours(int* out) {
    __shared__ int s[1024];
    const int n = blockDim.x * blockDim.y * blockDim.z;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    s[t] = 1000 * (int)blockIdx.x + t;
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}

// Every thread of every block adds one, as an int and as a float.
extern "C" __global__ void count(int* counter, float* fsum, unsigned* hi) {
    atomicAdd(counter, 1);
    atomicAdd(fsum, 1.0f);
    atomicMax(hi, blockIdx.x * blockDim.x + threadIdx.x);
}

// The indices of a 3-D grid of 3-D blocks: each thread writes its coordinates.
extern "C" __global__ void indices(int* out) {
    const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int n = blockDim.x * blockDim.y * blockDim.z;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int* o = out + 6 * (b * n + t);
    o[0] = blockIdx.x; o[1] = blockIdx.y; o[2] = blockIdx.z;
    o[3] = threadIdx.x; o[4] = threadIdx.y; o[5] = threadIdx.z;
}

// Lane 0 waits at a shuffle while the rest of its warp waits at a barrier.
extern "C" __global__ void deadlock(int* out) {
    if ((threadIdx.x & 31) == 0) out[0] = __shfl_sync(WSD_FULL_MASK, 1, 0);
    __syncthreads();
}

// Half the block waits at one barrier, half at another.
extern "C" __global__ void split_barrier(int* out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}
"#;

fn executor() -> Option<Executor> {
    if !common::executor_available() {
        return None;
    }
    let mut s = Sources::default();
    s.files.push(("model.cu", MODEL.to_string()));
    Some(Executor::with_sources(s))
}

fn launch(kernel: &str, grid: (u32, u32, u32), block: (u32, u32, u32), args: Vec<Arg>) -> Launch {
    Launch {
        source: "model.cu",
        kernel: kernel.into(),
        grid,
        block,
        shared_bytes: 0,
        args,
    }
}

#[test]
fn shuffles_and_votes_follow_cuda_semantics() {
    let Some(ex) = executor() else { return };
    let n = 64;
    let mut out = HostBuf::zeros(4 * 10 * n);
    ex.launch(&launch(
        "shuffles",
        (1, 1, 1),
        (n as u32, 1, 1),
        vec![Arg::Ptr(out.ptr())],
    ))
    .unwrap();
    let got = out.to_i32();
    let ballot = (0..32).filter(|l| l % 3 == 0).fold(0u32, |m, l| m | 1 << l) as i32;
    for t in 0..n {
        let lane = (t % 32) as i32;
        let seg = lane & !7;
        let i = lane - seg;
        let want = [
            5,
            if lane >= 3 { lane - 3 } else { lane },
            if lane + 3 < 32 { lane + 3 } else { lane },
            lane ^ 6,
            lane ^ 1,
            seg + 13 % 8,
            if i >= 3 { lane - 3 } else { lane },
            if i + 3 < 8 { lane + 3 } else { lane },
            // xor 9 leaves the 8-lane segment for lane ^ 9 ≥ seg + 8: such lanes keep their own.
            if (lane ^ 9) < seg + 8 { lane ^ 9 } else { lane },
            ballot ^ (1 << 30) ^ (1 << 29),
        ];
        assert_eq!(&got[10 * t..10 * t + 10], &want, "thread {t}");
    }
}

#[test]
fn a_barrier_orders_shared_memory_across_the_block() {
    let Some(ex) = executor() else { return };
    // 1024 threads as (16, 8, 8) in 5 blocks: every thread reads what its neighbour wrote.
    let (blocks, n) = (5usize, 1024usize);
    let mut out = HostBuf::zeros(4 * blocks * n);
    ex.launch(&launch(
        "neighbours",
        (blocks as u32, 1, 1),
        (16, 8, 8),
        vec![Arg::Ptr(out.ptr())],
    ))
    .unwrap();
    let got = out.to_i32();
    for b in 0..blocks {
        for t in 0..n {
            assert_eq!(
                got[b * n + t],
                (1000 * b + (t + 1) % n) as i32,
                "block {b} thread {t}"
            );
        }
    }
}

#[test]
fn atomics_are_atomic_across_blocks_running_in_parallel() {
    let Some(ex) = executor() else { return };
    let (blocks, threads) = (64u32, 256u32);
    let (mut c, mut f, mut hi) = (HostBuf::zeros(4), HostBuf::zeros(4), HostBuf::zeros(4));
    let args = vec![Arg::Ptr(c.ptr()), Arg::Ptr(f.ptr()), Arg::Ptr(hi.ptr())];
    ex.launch(&launch("count", (blocks, 1, 1), (threads, 1, 1), args))
        .unwrap();
    let total = (blocks * threads) as i32;
    assert_eq!(c.to_i32()[0], total);
    assert_eq!(
        f.to_f32(wsdscope_kernels::launch::Elem::F32)[0],
        total as f32
    );
    assert_eq!(hi.to_i32()[0], total - 1);
}

#[test]
fn a_three_dimensional_launch_sees_its_indices() {
    let Some(ex) = executor() else { return };
    let (grid, block) = ((3u32, 2u32, 2u32), (4u32, 2u32, 3u32));
    let (nb, nt) = (12usize, 24usize);
    let mut out = HostBuf::zeros(4 * 6 * nb * nt);
    ex.launch(&launch("indices", grid, block, vec![Arg::Ptr(out.ptr())]))
        .unwrap();
    let got = out.to_i32();
    for b in 0..nb {
        let (bx, by, bz) = (b % 3, b / 3 % 2, b / 6);
        for t in 0..nt {
            let (tx, ty, tz) = (t % 4, t / 4 % 2, t / 8);
            let o = &got[6 * (b * nt + t)..6 * (b * nt + t) + 6];
            assert_eq!(
                o,
                [bx, by, bz, tx, ty, tz].map(|v| v as i32),
                "block {b} thread {t}"
            );
        }
    }
}

#[test]
fn what_a_gpu_would_hang_on_is_an_error_naming_where() {
    let Some(ex) = executor() else { return };
    let mut out = HostBuf::zeros(4 * 64);
    let err = ex
        .launch(&launch(
            "deadlock",
            (1, 1, 1),
            (64, 1, 1),
            vec![Arg::Ptr(out.ptr())],
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("deadlock") && err.contains("model.cu:"),
        "{err}"
    );
    let err = ex
        .launch(&launch(
            "split_barrier",
            (1, 1, 1),
            (64, 1, 1),
            vec![Arg::Ptr(out.ptr())],
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("divergent code"), "{err}");
    // A kernel that does not exist, and a launch with too few arguments.
    let err = ex
        .launch(&launch("nope", (1, 1, 1), (32, 1, 1), vec![]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("defines no kernel nope"), "{err}");
    let err = ex
        .launch(&launch(
            "count",
            (1, 1, 1),
            (32, 1, 1),
            vec![Arg::Ptr(out.ptr())],
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("passes 1 arguments"), "{err}");
}
