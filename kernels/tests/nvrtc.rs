//! Compiles every CUDA source in `src/cuda` to PTX with NVRTC and checks that each
//! `extern "C"` kernel became a PTX entry point. (That every launch names a defined kernel
//! with a matching argument list, and that every kernel is launched, is checked by running
//! them on the CPU executor: `tests/executor.rs`.) NVRTC is loaded at run time.
//! Looked up, in order: `WSDSCOPE_NVRTC` (a path to libnvrtc.so*; when set, only that path),
//! then `libnvrtc.so*` in the directories of `LD_LIBRARY_PATH`, `$CUDA_HOME/lib64` and
//! `$CUDA_HOME/lib`; the `libnvrtc-builtins.so.*` beside it is loaded first. `cuda_bf16.h` is
//! searched in `CUDA_INCLUDE`, then in `include` beside the library's directory (the sources
//! need no CUDA header, so none is fine).
//!
//! `scripts/test` provides NVRTC (the `nvidia-cuda-nvrtc` wheel pinned in
//! `scripts/cuda/requirements.txt`) and sets `WSDSCOPE_REQUIRE_NVRTC=1`: then, or when
//! `WSDSCOPE_NVRTC` is set, an NVRTC that is missing or does not load fails the test. Otherwise
//! (a plain `cargo test`) the test says why it skipped the compile and how to enable it, and
//! passes.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use libloading::Library;
use wsdscope_kernels::{CUDA_COMMON_HEADER, CUDA_SOURCES, cuda_kernel_names};

type Program = *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

const NAMES: [&str; 4] = [
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
];

/// The directories NVRTC is searched in (for each of [`NAMES`]) when `WSDSCOPE_NVRTC` is unset.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.push(Path::new(&home).join("lib64"));
        dirs.push(Path::new(&home).join("lib"));
    }
    dirs.retain(|d| !d.as_os_str().is_empty());
    dirs
}

/// Whether a missing or unloadable NVRTC fails the test: `WSDSCOPE_REQUIRE_NVRTC` set to
/// anything but empty or `0`, or an explicit `WSDSCOPE_NVRTC`.
fn nvrtc_required() -> bool {
    std::env::var_os("WSDSCOPE_REQUIRE_NVRTC").is_some_and(|v| !v.is_empty() && v != "0")
        || std::env::var_os("WSDSCOPE_NVRTC").is_some()
}

const HOW_TO_GET_NVRTC: &str = "scripts/test provides NVRTC: the nvidia-cuda-nvrtc wheel pinned in \
     scripts/cuda/requirements.txt, in a venv at ~/.cache/wsdscope/nvrtc-venv. By hand: pip \
     install that wheel and set WSDSCOPE_NVRTC=<site-packages>/nvidia/cu13/lib/libnvrtc.so.13 \
     (or put a directory holding libnvrtc.so.13 on LD_LIBRARY_PATH, or set CUDA_HOME).";

/// NVRTC, loaded, and its path; or why not. `WSDSCOPE_NVRTC` alone when it is set, else the
/// first of [`NAMES`] in the first of [`search_dirs`] that has one.
fn load_nvrtc() -> Result<(PathBuf, Nvrtc), String> {
    let path = match std::env::var_os("WSDSCOPE_NVRTC") {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(format!("WSDSCOPE_NVRTC={}: no such file", p.display()));
            }
            p
        }
        None => {
            let dirs = search_dirs();
            let found = dirs
                .iter()
                .flat_map(|d| NAMES.iter().map(move |n| d.join(n)))
                .find(|p| p.is_file());
            let Some(p) = found else {
                let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                return Err(format!(
                    "NVRTC not found: WSDSCOPE_NVRTC is unset and none of {} is in \
                     LD_LIBRARY_PATH or $CUDA_HOME/lib64, $CUDA_HOME/lib (searched: {})",
                    NAMES.join(", "),
                    if dirs.is_empty() {
                        "nothing".to_string()
                    } else {
                        dirs.join(", ")
                    }
                ));
            };
            p
        }
    };
    let builtins = load_builtins(&path);
    // SAFETY: loading NVRTC runs its initialisers, which have no preconditions.
    match unsafe { Library::new(&path) } {
        Ok(lib) => Ok((
            path,
            Nvrtc {
                lib,
                _builtins: builtins,
            },
        )),
        Err(e) => Err(format!("cannot load NVRTC from {}: {e}", path.display())),
    }
}

/// The `libnvrtc-builtins.so.*` beside `lib`, loaded. NVRTC opens its builtins library by
/// name when it compiles, and some releases (the 13.0 wheel) carry no RUNPATH to find it in
/// their own directory; once loaded, the dynamic loader hands NVRTC this copy, so a path to
/// libnvrtc is all the test needs. None found (or loadable): NVRTC searches the loader's path.
fn load_builtins(lib: &Path) -> Vec<Library> {
    let Some(Ok(entries)) = lib.parent().map(std::fs::read_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so."))
        })
        // SAFETY: as for NVRTC itself: its initialisers have no preconditions.
        .filter_map(|p| unsafe { Library::new(&p) }.ok())
        .collect()
}

fn include_dir(lib: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CUDA_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(parent) = lib.parent().and_then(Path::parent) {
        dirs.push(parent.join("include"));
    }
    dirs.into_iter().find(|d| d.join("cuda_bf16.h").is_file())
}

struct Nvrtc {
    lib: Library,
    /// Kept loaded for NVRTC to find (see [`load_builtins`]).
    _builtins: Vec<Library>,
}

impl Nvrtc {
    fn sym<T: Copy>(&self, name: &[u8]) -> T {
        // SAFETY: each name is an NVRTC C entry point and `T` is its C signature as
        // declared in nvrtc.h; the library outlives every call (it lives in `self`).
        unsafe { *self.lib.get::<T>(name).expect("NVRTC symbol missing") }
    }

    fn version(&self) -> (c_int, c_int) {
        let f: VersionFn = self.sym(b"nvrtcVersion\0");
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers, as nvrtcVersion requires.
        unsafe { f(&mut major, &mut minor) };
        (major, minor)
    }

    /// PTX of `src`, or the compile log.
    fn compile(&self, name: &str, src: &str, options: &[String]) -> Result<String, String> {
        let create: CreateFn = self.sym(b"nvrtcCreateProgram\0");
        let compile: CompileFn = self.sym(b"nvrtcCompileProgram\0");
        let log_size: SizeFn = self.sym(b"nvrtcGetProgramLogSize\0");
        let get_log: GetFn = self.sym(b"nvrtcGetProgramLog\0");
        let ptx_size: SizeFn = self.sym(b"nvrtcGetPTXSize\0");
        let get_ptx: GetFn = self.sym(b"nvrtcGetPTX\0");
        let destroy: DestroyFn = self.sym(b"nvrtcDestroyProgram\0");

        let c_src = CString::new(src).unwrap();
        let c_name = CString::new(name).unwrap();
        let header = CString::new(CUDA_COMMON_HEADER).unwrap();
        let header_name = CString::new("common.cuh").unwrap();
        let c_opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).unwrap())
            .collect();
        let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: every pointer is a NUL-terminated string (or array of them) that lives
        // until the end of this function; `prog` is a valid out-pointer.
        let rc = unsafe {
            create(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                1,
                &header.as_ptr(),
                &header_name.as_ptr(),
            )
        };
        assert_eq!(rc, 0, "nvrtcCreateProgram({name}) failed with {rc}");
        // SAFETY: `prog` was created above; the options outlive the call.
        let rc = unsafe { compile(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
        let result = if rc == 0 {
            let mut n = 0usize;
            // SAFETY: `prog` compiled; the buffer has the size NVRTC reported.
            let ptx = unsafe {
                ptx_size(prog, &mut n);
                let mut buf = vec![0u8; n];
                get_ptx(prog, buf.as_mut_ptr().cast());
                buf
            };
            Ok(CStr::from_bytes_until_nul(&ptx)
                .unwrap()
                .to_string_lossy()
                .into_owned())
        } else {
            let mut n = 0usize;
            // SAFETY: as above, for the log.
            let log = unsafe {
                log_size(prog, &mut n);
                let mut buf = vec![0u8; n.max(1)];
                get_log(prog, buf.as_mut_ptr().cast());
                buf
            };
            Err(CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default())
        };
        // SAFETY: `prog` is a live program, destroyed once.
        unsafe { destroy(&mut prog) };
        result
    }
}

#[test]
fn every_cuda_source_is_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = CUDA_SOURCES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, listed, "src/cuda/*.cu and CUDA_SOURCES differ");
    for (name, src) in CUDA_SOURCES {
        assert!(
            !cuda_kernel_names(src).is_empty(),
            "{name} defines no kernels"
        );
    }
}

#[test]
fn cuda_sources_compile_with_nvrtc() {
    let (path, nvrtc) = match load_nvrtc() {
        Ok(found) => found,
        Err(why) if nvrtc_required() => panic!(
            "NVRTC is required here (WSDSCOPE_REQUIRE_NVRTC or WSDSCOPE_NVRTC is set) but \
             unusable: {why}.\n{HOW_TO_GET_NVRTC}"
        ),
        Err(why) => {
            eprintln!(
                "SKIPPED compiling the CUDA sources: {why}.\n{HOW_TO_GET_NVRTC}\nSet \
                 WSDSCOPE_REQUIRE_NVRTC=1 to make a missing NVRTC fail this test."
            );
            return;
        }
    };
    let (major, minor) = nvrtc.version();
    let mut options = vec![
        "--gpu-architecture=compute_90".to_string(),
        "-std=c++17".to_string(),
    ];
    match include_dir(&path) {
        Some(inc) => options.push(format!("--include-path={}", inc.display())),
        None => eprintln!(
            "note: no CUDA include directory (cuda_bf16.h; CUDA_INCLUDE) found; the sources \
             include only common.cuh, so none is needed"
        ),
    }
    eprintln!(
        "NVRTC {major}.{minor} from {}, options {options:?}",
        path.display()
    );
    let mut failures = Vec::new();
    for (name, src) in CUDA_SOURCES {
        match nvrtc.compile(name, src, &options) {
            Ok(ptx) => {
                let kernels = cuda_kernel_names(src);
                for k in &kernels {
                    assert!(
                        ptx.contains(&format!(".entry {k}(")),
                        "{name}: kernel {k} is not a PTX entry point"
                    );
                }
                eprintln!(
                    "{name}: {} kernels, {} bytes of PTX",
                    kernels.len(),
                    ptx.len()
                );
            }
            Err(log) => failures.push(format!("{name}:\n{log}")),
        }
    }
    assert!(
        failures.is_empty(),
        "NVRTC failed:\n{}",
        failures.join("\n")
    );
}
