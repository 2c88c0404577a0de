//! Compiles every CUDA source in `src/cuda` to PTX with NVRTC and checks that each
//! `extern "C"` kernel became a PTX entry point, and that every kernel `src/cuda_launch.rs`
//! launches by name is defined (that part needs no NVRTC). NVRTC is loaded at run time;
//! without it the test prints how to enable it and passes. Looked up, in order: `WSDSCOPE_NVRTC`
//! (a path to libnvrtc.so*), then `libnvrtc.so*` in the directories of
//! `LD_LIBRARY_PATH`, `$CUDA_HOME/lib64` and `$CUDA_HOME/lib`. `cuda_bf16.h` is searched in
//! `CUDA_INCLUDE`, then in `include` beside the library's directory.

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

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("WSDSCOPE_NVRTC") {
        out.push(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.push(Path::new(&home).join("lib64"));
        dirs.push(Path::new(&home).join("lib"));
    }
    for d in dirs {
        out.extend(NAMES.iter().map(|n| d.join(n)));
    }
    out.into_iter().filter(|p| p.is_file()).collect()
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

/// Every kernel that `src/cuda_launch.rs` asks for by a literal name (`function(dev,
/// "file.cu", "name")`, or `&format!("name_{}", T::SUFFIX)` for both element types) is an
/// `extern "C"` kernel of that source, so a misspelt launch fails here, without a GPU or
/// the `cuda` feature.
#[test]
fn every_launched_kernel_is_defined() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda_launch.rs");
    let launch = std::fs::read_to_string(&path).unwrap();
    let mut checked = Vec::new();
    for (at, _) in launch.match_indices("function(") {
        if launch[..at].ends_with("fn ") {
            continue;
        }
        let call = &launch[at..launch[at..].find(")?").map_or(launch.len(), |e| at + e)];
        // The call's string literals, in order: the source file, then the kernel name.
        let literals: Vec<&str> = call.split('"').skip(1).step_by(2).collect();
        let [file, name, ..] = literals[..] else {
            continue;
        };
        let names: Vec<String> = if call.contains("format!(") {
            if name.matches('{').count() != 1 || !name.ends_with("_{}") {
                continue; // built from a variable: not checkable here
            }
            ["f32", "bf16"]
                .iter()
                .map(|s| name.replace("{}", s))
                .collect()
        } else {
            vec![name.to_string()]
        };
        let (_, src) = CUDA_SOURCES
            .iter()
            .find(|(f, _)| *f == file)
            .unwrap_or_else(|| panic!("cuda_launch.rs names {file}, which is not a source"));
        let defined = cuda_kernel_names(src);
        for n in names {
            assert!(
                defined.contains(&n.as_str()),
                "cuda_launch.rs launches {n} from {file}, which defines {defined:?}"
            );
            checked.push(n);
        }
    }
    eprintln!("{} launched kernels defined: {checked:?}", checked.len());
    for n in ["adamw_step_f32", "adamw_check_f32", "adamw_stats_finish"] {
        assert!(checked.iter().any(|c| c == n), "{n} is not launched");
    }
}

#[test]
fn cuda_sources_compile_with_nvrtc() {
    let Some(path) = candidates().into_iter().next() else {
        eprintln!(
            "SKIPPED: NVRTC not found. Set WSDSCOPE_NVRTC=/path/to/libnvrtc.so.13 or put its \
             directory on LD_LIBRARY_PATH (e.g. a pip nvidia-cuda-nvrtc wheel's nvidia/cu13/lib)."
        );
        return;
    };
    // SAFETY: loading NVRTC runs its initialisers, which have no preconditions.
    let lib = match unsafe { Library::new(&path) } {
        Ok(lib) => lib,
        // Asked for explicitly (as CI does): a library that does not load is a failure.
        Err(e) if std::env::var_os("WSDSCOPE_NVRTC").is_some() => {
            panic!("WSDSCOPE_NVRTC={}: cannot load it: {e}", path.display())
        }
        Err(e) => {
            eprintln!("SKIPPED: could not load {}: {e}", path.display());
            return;
        }
    };
    let nvrtc = Nvrtc { lib };
    let (major, minor) = nvrtc.version();
    let mut options = vec![
        "--gpu-architecture=compute_90".to_string(),
        "-std=c++17".to_string(),
    ];
    match include_dir(&path) {
        Some(inc) => options.push(format!("--include-path={}", inc.display())),
        None => eprintln!(
            "note: no cuda_bf16.h found (set CUDA_INCLUDE); relying on NVRTC's built-in headers"
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
