//! `--device` resolved to a candle device: the CPU, or a CUDA device (one per ordinal for
//! the whole process). Asking for CUDA never falls back to the CPU; a build or machine
//! without it gets an error that says why. Under a launcher (`mpirun`, `srun`) with several
//! ranks, `--device cuda` is the GPU of the rank's place on its node ([`gpu_ordinal`]).

use candle_core::Device;

use crate::error::{Error, Result};

/// Resolves a `--device` value. CUDA needs a build with the `cuda` feature and a working
/// driver; asking for CUDA never falls back to the CPU.
pub fn device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    if spec == "cuda" {
        return cuda_device(spec, None);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let Ok(ordinal) = n.parse::<usize>() else {
            return Err(Error::Config(format!(
                "--device {spec:?} is not allowed; use cpu, cuda or cuda:N"
            )));
        };
        return cuda_device(spec, Some(ordinal));
    }
    if spec == "cuda-emu" {
        return Err(Error::Config(
            "--device cuda-emu runs the CUDA kernels on the CPU executor to check them; it is \
             only for `wsdscope bench --kernels --device cuda-emu`. To train, use cpu, cuda or \
             cuda:N"
                .into(),
        ));
    }
    Err(Error::Config(format!(
        "--device {spec:?} is not allowed; use cpu, cuda or cuda:N"
    )))
}

/// Where the launcher put this process: what [`gpu_ordinal`] needs besides the GPU count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Ranks in the job ([`crate::collective::launched_ranks`]); `None` without a launcher.
    pub ranks: Option<usize>,
    /// This process's place among the ranks on its node, from the launcher.
    pub local_rank: Option<usize>,
    /// `CUDA_VISIBLE_DEVICES`, if set.
    pub visible: Option<String>,
}

/// Where each launcher puts the local rank: OpenMPI, Slurm's `srun`, MPICH's Hydra, PMI.
const LOCAL_RANK_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
];

impl Placement {
    /// This process's placement, from the launcher's environment.
    pub fn from_env() -> Placement {
        Placement {
            ranks: crate::collective::launched_ranks(),
            local_rank: LOCAL_RANK_VARS
                .iter()
                .find_map(|v| std::env::var(v).ok()?.trim().parse().ok()),
            visible: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        }
    }
}

/// The CUDA ordinal that `--device cuda` (`requested` `None`) or `cuda:N` (`Some(N)`) means
/// for a process placed at `place` on a node whose driver shows `count` GPUs. One process
/// (or a job of one rank) takes what it asked for, GPU 0 for plain `cuda`. A rank of a job of
/// several takes one GPU per rank on its node: ordinal 0 when `CUDA_VISIBLE_DEVICES` shows it
/// exactly one, else the GPU of its local rank; there `cuda:N` with N > 0 is refused (every
/// rank would ask for the same GPU), and so is a local rank with no GPU of its own.
pub fn gpu_ordinal(requested: Option<usize>, place: &Placement, count: usize) -> Result<usize> {
    let spec = requested.map_or("cuda".to_string(), |n| format!("cuda:{n}"));
    let Some(ranks) = place.ranks.filter(|&n| n > 1) else {
        return Ok(requested.unwrap_or(0));
    };
    if let Some(n) = requested.filter(|&n| n > 0) {
        return Err(Error::Config(format!(
            "--device {spec} is not allowed under a launcher with {ranks} ranks: each rank takes \
             the GPU of its place on its node; use --device cuda (or cuda:0), and \
             CUDA_VISIBLE_DEVICES to choose which GPUs (GPU {n} would be shared by every rank)"
        )));
    }
    let one_visible = place
        .visible
        .as_deref()
        .is_some_and(|v| v.split(',').filter(|d| !d.trim().is_empty()).count() == 1);
    if one_visible {
        return Ok(0);
    }
    let Some(local) = place.local_rank else {
        return Err(Error::Config(format!(
            "--device {spec} under a launcher with {ranks} ranks: cannot tell this rank's place \
             on its node (none of {} is set); give each rank one GPU with CUDA_VISIBLE_DEVICES",
            LOCAL_RANK_VARS.join(", ")
        )));
    };
    if local >= count {
        let visible = place
            .visible
            .as_deref()
            .map_or(String::new(), |v| format!(" (CUDA_VISIBLE_DEVICES={v})"));
        return Err(Error::Config(format!(
            "--device {spec}: local rank {local} needs GPU {local}, but this node shows \
             {count} GPU(s){visible}; start at most {count} rank(s) per node"
        )));
    }
    Ok(local)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _requested: Option<usize>) -> Result<Device> {
    Err(Error::Config(format!(
        "--device {spec}: CUDA is unavailable in this build (it has no cuda feature); use --device cpu"
    )))
}

/// CUDA device `ordinal`: one candle device per ordinal for the whole process (tensors of two
/// separately created devices would count as being on different devices), on a stream of its
/// own. The driver is asked first, through error codes, so a missing driver or device gives
/// an error saying why rather than a panic.
#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, requested: Option<usize>) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let unavailable = |why: String| {
        Error::Config(format!(
            "--device {spec}: CUDA is unavailable: {why}; use --device cpu"
        ))
    };
    let ordinal = gpu_ordinal(
        requested,
        &Placement::from_env(),
        gpu_count().map_err(unavailable)?,
    )?;
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = devices.get(&ordinal) {
        return Ok(d.clone());
    }
    wsdscope_kernels::cuda_device_name(ordinal).map_err(unavailable)?;
    let dev = Device::new_cuda_with_stream(ordinal).map_err(|e| unavailable(e.to_string()))?;
    if let Device::Cuda(c) = &dev {
        // SAFETY: every kernel, copy and cuBLAS call of this device goes to its one stream
        // (candle's ops, and the fused kernels, which launch on `cuda_stream()`), so stream
        // order alone sequences all uses of its tensors; cross-stream events are not needed.
        unsafe { c.disable_event_tracking() };
    }
    devices.insert(ordinal, dev.clone());
    Ok(dev)
}

/// How many GPUs the driver shows this process (after `CUDA_VISIBLE_DEVICES`).
#[cfg(feature = "cuda")]
fn gpu_count() -> std::result::Result<usize, String> {
    use cudarc::driver::result;
    result::init().map_err(|e| format!("the CUDA driver did not initialise ({e})"))?;
    let n = result::device::get_count()
        .map_err(|e| format!("the CUDA driver cannot count devices ({e})"))?;
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched(ranks: usize, local: Option<usize>, visible: Option<&str>) -> Placement {
        Placement {
            ranks: Some(ranks),
            local_rank: local,
            visible: visible.map(String::from),
        }
    }

    #[test]
    fn one_process_takes_the_gpu_it_asks_for() {
        let alone = Placement::default();
        assert_eq!(gpu_ordinal(None, &alone, 8).unwrap(), 0);
        assert_eq!(gpu_ordinal(Some(3), &alone, 8).unwrap(), 3);
        // `mpirun -n 1` is one process too.
        assert_eq!(
            gpu_ordinal(Some(2), &launched(1, Some(0), None), 4).unwrap(),
            2
        );
    }

    #[test]
    fn each_rank_takes_the_gpu_of_its_local_rank() {
        for local in 0..4 {
            let place = launched(8, Some(local), None);
            assert_eq!(gpu_ordinal(None, &place, 4).unwrap(), local);
            assert_eq!(gpu_ordinal(Some(0), &place, 4).unwrap(), local);
        }
        // CUDA_VISIBLE_DEVICES listing several GPUs still leaves the choice to the local rank.
        let place = launched(2, Some(1), Some("4,5"));
        assert_eq!(gpu_ordinal(None, &place, 2).unwrap(), 1);
    }

    #[test]
    fn a_rank_shown_one_gpu_takes_ordinal_0() {
        for visible in ["3", " 7 ", "GPU-8d1f0a4e,"] {
            let place = launched(4, Some(3), Some(visible));
            assert_eq!(gpu_ordinal(None, &place, 1).unwrap(), 0, "{visible:?}");
        }
        // Shown one GPU and no local rank known: still ordinal 0.
        assert_eq!(
            gpu_ordinal(None, &launched(4, None, Some("2")), 1).unwrap(),
            0
        );
    }

    #[test]
    fn too_few_gpus_for_the_local_ranks_is_an_error_naming_both() {
        let e = gpu_ordinal(None, &launched(8, Some(5), None), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("local rank 5 needs GPU 5"), "{e}");
        assert!(e.contains("shows 4 GPU(s)"), "{e}");
        let e = gpu_ordinal(None, &launched(3, Some(2), Some("0,1")), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(CUDA_VISIBLE_DEVICES=0,1)"), "{e}");
    }

    #[test]
    fn several_ranks_refuse_a_fixed_gpu_and_an_unknown_place() {
        let e = gpu_ordinal(Some(2), &launched(4, Some(0), None), 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--device cuda:2 is not allowed"), "{e}");
        let e = gpu_ordinal(None, &launched(4, None, None), 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OMPI_COMM_WORLD_LOCAL_RANK"), "{e}");
    }

    #[test]
    fn device_names_what_is_allowed() {
        for bad in ["gpu", "cuda:x", "cuda:-1", "cuda0"] {
            let e = device(bad).unwrap_err().to_string();
            assert!(e.contains("use cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }
}
