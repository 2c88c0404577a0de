//! The CPU executor of the project's CUDA sources (`--device cuda-emu`): the same `.cu`
//! files NVRTC compiles for a GPU, compiled for the host by the system C++ compiler against
//! `cuda_emu.h` (this crate's own header supplying the CUDA execution model: fibers for
//! threads, real block barriers, warp-synchronous shuffles, per-block shared memory) and run
//! with the launches of [`crate::launch`], the ones a GPU run gets.
//!
//! It is a correctness tool, not a fast path: it runs every kernel on machines without a
//! GPU, so indexing, shared-memory use, shuffles, grid geometry, argument lists and bf16
//! rounding are executed in every test run. Each source becomes one shared library, built
//! at first use and cached by a hash of its inputs (`WSDSCOPE_EMU_CACHE`, else
//! `~/.cache/wsdscope/cuda-emu`); the compiler is `$CXX`, else `c++`. [`Executor::with_sources`]
//! builds from other source text (a test compiles deliberately broken variants that way).
//!
//! Buffers are host memory; a [`crate::launch::DevPtr`] is a host address. Blocks run in
//! parallel over rayon's pool, a block's threads as fibers on one OS thread.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use libloading::Library;
use rayon::prelude::*;

use crate::cuda::{CUDA_COMMON_HEADER, CUDA_SOURCES, cuda_kernel_names};
use crate::error::Error;
use crate::launch::{DevPtr, Gpu, Launch};

mod host;
pub use host::HostBuf;

/// The execution-model header every source is compiled against.
pub const EMU_HEADER: &str = include_str!("cuda_emu.h");

/// Flags of every host compile: IEEE arithmetic without FMA contraction (the GPU build
/// contracts, so results differ from a GPU's in the last bits, within the parity
/// tolerances); no fortify (its longjmp checks reject fiber stacks).
const CXX_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-U_FORTIFY_SOURCE",
    "-D_FORTIFY_SOURCE=0",
    "-pthread",
    "-w",
];

fn err(msg: impl Into<String>) -> Error {
    Error::Executor(msg.into())
}

/// `wsd_emu::KernelInfo` of the header.
#[repr(C)]
struct KernelInfo {
    name: *const c_char,
    entry: *const c_void,
    nargs: u32,
    sizes: *const u32,
}

type KernelsFn = unsafe extern "C" fn(*mut *const KernelInfo) -> u32;
type RunFn = unsafe extern "C" fn(
    u32,
    *const u32,
    *const u32,
    *mut *mut c_void,
    u64,
    u64,
    *mut c_char,
    usize,
) -> i32;

/// One kernel of a module: its table index and parameter sizes.
struct Kernel {
    index: u32,
    sizes: Vec<u32>,
}

/// One compiled source, loaded.
struct Module {
    kernels: HashMap<String, Kernel>,
    run: RunFn,
    _lib: Library,
}

/// The sources an executor builds from: the common header and each `.cu` file.
#[derive(Clone, Debug)]
pub struct Sources {
    pub common: String,
    pub files: Vec<(&'static str, String)>,
}

impl Default for Sources {
    /// The project's sources, as NVRTC gets them.
    fn default() -> Self {
        Self {
            common: CUDA_COMMON_HEADER.to_string(),
            files: CUDA_SOURCES
                .iter()
                .map(|(f, s)| (*f, s.to_string()))
                .collect(),
        }
    }
}

impl Sources {
    /// The project's source files as they stand in `dir` (`common.cuh` and every `.cu` of
    /// [`CUDA_SOURCES`]): edited kernels checked on the executor without rebuilding
    /// wsdscope (`WSDSCOPE_CUDA_SOURCES=DIR wsdscope bench --kernels --device cuda-emu`).
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| {
                err(format!(
                    "cannot read {} ({e}); a sources folder holds common.cuh and {}",
                    dir.join(name).display(),
                    CUDA_SOURCES
                        .iter()
                        .map(|(f, _)| *f)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let mut files = Vec::new();
        for (f, _) in CUDA_SOURCES {
            files.push((*f, read(f)?));
        }
        Ok(Self {
            common: read("common.cuh")?,
            files,
        })
    }
}

/// Runs launches of the CUDA sources on the CPU.
pub struct Executor {
    sources: Sources,
    modules: Mutex<HashMap<&'static str, Arc<Module>>>,
    /// Launches run, by kernel name.
    launched: Mutex<HashMap<String, u64>>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor of the project's sources.
    pub fn new() -> Self {
        Self::with_sources(Sources::default())
    }

    /// An executor of other source text (same file names).
    pub fn with_sources(sources: Sources) -> Self {
        Self {
            sources,
            modules: Mutex::new(HashMap::new()),
            launched: Mutex::new(HashMap::new()),
        }
    }

    /// Builds (or loads from the cache) every source now, in parallel, so the first launch
    /// does not pay for it; returns the first build error.
    pub fn prepare(&self) -> Result<(), Error> {
        let files: Vec<&'static str> = self.sources.files.iter().map(|(f, _)| *f).collect();
        files
            .par_iter()
            .map(|f| self.module(f).map(|_| ()))
            .collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }

    fn module(&self, file: &'static str) -> Result<Arc<Module>, Error> {
        if let Some(m) = self.lock().get(file) {
            return Ok(m.clone());
        }
        let src = self
            .sources
            .files
            .iter()
            .find(|(f, _)| *f == file)
            .map(|(_, s)| s.as_str())
            .ok_or_else(|| err(format!("no CUDA source named {file}")))?;
        // Built outside the lock; a race builds twice and keeps one, harmlessly.
        let m = Arc::new(build(file, src, &self.sources.common)?);
        Ok(self.lock().entry(file).or_insert(m).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Arc<Module>>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one launch to completion: checks that the kernel exists and that the argument
    /// list matches its parameters (count and byte size of each), then runs every block.
    pub fn launch(&self, l: &Launch) -> Result<(), Error> {
        let m = self.module(l.source)?;
        let k = m
            .kernels
            .get(&l.kernel)
            .ok_or_else(|| err(format!("{} defines no kernel {}", l.source, l.kernel)))?;
        let given: Vec<u32> = l.args.iter().map(|a| a.size() as u32).collect();
        if given != k.sizes {
            return Err(err(format!(
                "{}: the launch passes {} arguments of {:?} bytes, the kernel takes {} of {:?}",
                l.kernel,
                given.len(),
                given,
                k.sizes.len(),
                k.sizes
            )));
        }
        if l.shared_bytes != 0 {
            return Err(err(format!(
                "{}: dynamic shared memory ({} bytes) is not supported by the executor",
                l.kernel, l.shared_bytes
            )));
        }
        *self
            .launched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(l.kernel.clone())
            .or_default() += 1;
        let blocks = l.blocks();
        if blocks == 0 {
            return Ok(());
        }
        let params = Params(l.params());
        let grid = [l.grid.0, l.grid.1, l.grid.2];
        let block = [l.block.0, l.block.1, l.block.2];
        let parts = (4 * rayon::current_num_threads() as u64).min(blocks);
        let per = blocks.div_ceil(parts);
        (0..blocks.div_ceil(per)).into_par_iter().try_for_each(|p| {
            let (begin, end) = (p * per, ((p + 1) * per).min(blocks));
            let mut msg = vec![0 as c_char; 1024];
            let mut ps = params.copy();
            // SAFETY: `run` is the module's wsd_emu_run; the grid and block arrays hold 3
            // dims, `ps` points at the launch's arguments (alive in `l` for this call)
            // whose count and sizes match the kernel's parameters (checked above), and
            // every pointer argument is a host buffer the op sized for this launch.
            let rc = unsafe {
                (m.run)(
                    k.index,
                    grid.as_ptr(),
                    block.as_ptr(),
                    ps.as_mut_ptr(),
                    begin,
                    end,
                    msg.as_mut_ptr(),
                    msg.len(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                // SAFETY: the runtime wrote a NUL-terminated message into `msg`.
                let text = unsafe { CStr::from_ptr(msg.as_ptr()) };
                Err(err(text.to_string_lossy().into_owned()))
            }
        })
    }

    /// How many launches of each kernel this executor has run.
    pub fn launched(&self) -> HashMap<String, u64> {
        self.launched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A context for one op: launches run here, temporaries live until it is dropped.
    pub fn context(&self) -> Ctx<'_> {
        Ctx {
            ex: self,
            scratch: Vec::new(),
        }
    }
}

/// The launch's parameter pointers, shared by the threads that run its blocks (each reads
/// the arguments; none writes them).
struct Params(Vec<*mut c_void>);
// SAFETY: the pointers are only read, and point at arguments that outlive the launch.
unsafe impl Sync for Params {}

impl Params {
    /// A copy for one thread's call (the runtime takes a mutable array).
    fn copy(&self) -> Vec<*mut c_void> {
        self.0.clone()
    }
}

/// One op's use of an [`Executor`].
pub struct Ctx<'a> {
    ex: &'a Executor,
    scratch: Vec<HostBuf>,
}

impl Gpu for Ctx<'_> {
    fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error> {
        let mut b = HostBuf::garbage(bytes);
        let p = b.ptr();
        self.scratch.push(b);
        Ok(p)
    }

    fn launch(&mut self, l: &Launch) -> Result<(), Error> {
        self.ex.launch(l)
    }
}

/// FNV-1a over the build's inputs: the cache key of a module.
fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WSDSCOPE_EMU_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("wsdscope").join("cuda-emu")
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// The first line of `$CXX --version` (else `c++`): the compiler the executor builds with,
/// or why there is none.
pub fn host_compiler() -> Result<String, Error> {
    let cxx = compiler();
    let out = Command::new(&cxx).arg("--version").output().map_err(|e| {
        err(format!(
            "no C++ compiler {cxx:?} ({e}); the CUDA executor builds the kernels with it: \
             install g++ or clang++, or set CXX"
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or(&cxx).to_string())
}

/// For test suites: whether the executor can build kernels here. Without a C++ compiler it
/// prints why the caller skips and returns false, unless `WSDSCOPE_REQUIRE_EMU` is set (to
/// anything but empty or `0`; `scripts/test` sets it): then a missing compiler is a failure,
/// a panic naming it.
pub fn available_or_required() -> bool {
    match host_compiler() {
        Ok(_) => true,
        Err(e) => {
            let required =
                std::env::var("WSDSCOPE_REQUIRE_EMU").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{e} (WSDSCOPE_REQUIRE_EMU is set)");
            eprintln!("SKIPPED: {e}. Set WSDSCOPE_REQUIRE_EMU=1 to make this a failure.");
            false
        }
    }
}

/// The translation unit of `file`: the header, the source, the table of its kernels.
fn unit(file: &str, src: &str) -> String {
    let mut u = format!("#include \"cuda_emu.h\"\n#include \"{file}\"\n");
    u.push_str("static const wsd_emu::KernelInfo wsd_emu_table[] = {\n");
    for k in cuda_kernel_names(src) {
        u.push_str(&format!("    WSD_EMU_KERNEL({k})\n"));
    }
    u.push_str("};\nWSD_EMU_EXPORTS(wsd_emu_table)\n");
    u
}

/// Builds `file` (or finds it in the cache) and loads it.
fn build(file: &'static str, src: &str, common: &str) -> Result<Module, Error> {
    let cxx = compiler();
    let tu = unit(file, src);
    let flags = CXX_FLAGS.join(" ");
    let key = fingerprint(&[
        cxx.as_bytes(),
        flags.as_bytes(),
        EMU_HEADER.as_bytes(),
        common.as_bytes(),
        src.as_bytes(),
        tu.as_bytes(),
    ]);
    let stem = file.trim_end_matches(".cu");
    let dir = cache_dir().join(format!("{stem}-{key:016x}"));
    let lib = dir.join(format!("{stem}.so"));
    if !lib.is_file() {
        compile(&cxx, &dir, file, src, common, &tu, &lib)?;
    }
    load(&lib)
}

fn compile(
    cxx: &str,
    dir: &Path,
    file: &str,
    src: &str,
    common: &str,
    tu: &str,
    lib: &Path,
) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| err(format!("{what} {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", e))?;
    // Each build writes its own files and publishes the library by rename, so concurrent
    // builds (parallel tests, two processes) never see a half-written one.
    let tmp = dir.join(format!(
        "build-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let tmp = PathBuf::from(tmp.to_string_lossy().replace(['(', ')'], ""));
    std::fs::create_dir_all(&tmp).map_err(|e| io("cannot create", e))?;
    let write = |name: &str, text: &str| {
        std::fs::write(tmp.join(name), text).map_err(|e| io(&format!("cannot write {name} in"), e))
    };
    write("cuda_emu.h", EMU_HEADER)?;
    write("common.cuh", common)?;
    write(file, src)?;
    write("unit.cpp", tu)?;
    let out = tmp.join("module.so");
    let run = Command::new(cxx)
        .args(CXX_FLAGS)
        .arg("-I")
        .arg(&tmp)
        .arg("-o")
        .arg(&out)
        .arg(tmp.join("unit.cpp"))
        .output()
        .map_err(|e| {
            err(format!(
                "cannot run the C++ compiler {cxx:?} ({e}); the CUDA executor builds the kernels \
                 with it: install g++ or clang++, or set CXX"
            ))
        })?;
    if !run.status.success() {
        let log = String::from_utf8_lossy(&run.stderr);
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err(format!(
            "{cxx} failed to build {file} for the executor ({}):\n{}",
            run.status,
            log.lines().take(40).collect::<Vec<_>>().join("\n")
        )));
    }
    std::fs::rename(&out, lib).map_err(|e| io("cannot publish the module in", e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn load(path: &Path) -> Result<Module, Error> {
    let e = |what: String| err(format!("{}: {what}", path.display()));
    // SAFETY: the library is one this executor built from the header and a kernel source;
    // loading it runs no initialisers beyond the C++ runtime's.
    let lib = unsafe { Library::new(path) }.map_err(|x| e(x.to_string()))?;
    // SAFETY: the symbols are the header's WSD_EMU_EXPORTS, with these signatures.
    let (kernels, run) = unsafe {
        let k = *lib
            .get::<KernelsFn>(b"wsd_emu_kernels\0")
            .map_err(|x| e(x.to_string()))?;
        let r = *lib
            .get::<RunFn>(b"wsd_emu_run\0")
            .map_err(|x| e(x.to_string()))?;
        (k, r)
    };
    let mut table: *const KernelInfo = std::ptr::null();
    // SAFETY: wsd_emu_kernels stores a pointer to the module's static table and returns its
    // length; each entry's name is a C string and `sizes` holds `nargs` values, all static.
    let infos = unsafe {
        let n = kernels(&mut table);
        std::slice::from_raw_parts(table, n as usize)
    };
    let mut map = HashMap::new();
    for (i, k) in infos.iter().enumerate() {
        // SAFETY: as above.
        let (name, sizes) = unsafe {
            (
                CStr::from_ptr(k.name).to_string_lossy().into_owned(),
                std::slice::from_raw_parts(k.sizes, k.nargs as usize).to_vec(),
            )
        };
        map.insert(
            name,
            Kernel {
                index: i as u32,
                sizes,
            },
        );
    }
    Ok(Module {
        kernels: map,
        run,
        _lib: lib,
    })
}
