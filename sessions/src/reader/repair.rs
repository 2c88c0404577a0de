//! What is looked at, and mended, before HDF5 opens a session file: its signature, a lost
//! tail, and the open-for-writing mark a killed writer leaves in the superblock.

use std::io::Read;
use std::path::Path;

use super::session::damaged;
use crate::error::{Result, session_err};

const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// A version 2/3 superblock records the end-of-file address; a shorter file lost its tail.
/// Returns (length, promised length) for such a file. A live writer can be mid-flush, so a
/// short file is looked at twice.
pub(super) fn truncation(path: &Path) -> Option<(u64, u64)> {
    let eof_of = |path: &Path| -> Option<(u64, u64)> {
        let mut f = std::fs::File::open(path).ok()?;
        let mut sb = [0u8; 36];
        f.read_exact(&mut sb).ok()?;
        // signature(8) version(1) offset size(1) length size(1) flags(1) base(8) ext(8) eof(8)
        let (version, offset_size) = (sb[8], sb[9]);
        if !(version == 2 || version == 3) || offset_size != 8 {
            return None;
        }
        let base = u64::from_le_bytes(sb[12..20].try_into().ok()?);
        let eof = u64::from_le_bytes(sb[28..36].try_into().ok()?);
        let len = f.metadata().ok()?.len();
        (len < base + eof).then_some((len, base + eof))
    };
    eof_of(path)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    eof_of(path)
}

/// Names what is wrong with a path before HDF5 sees it.
pub(super) fn check_is_hdf5(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        session_err(
            path,
            if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                format!("cannot be read: {e}")
            },
        )
    })?;
    if meta.is_dir() {
        return Err(session_err(path, "is a directory, not a session file"));
    }
    if meta.len() == 0 {
        return Err(session_err(path, "is empty (0 bytes), not a session file"));
    }
    let mut head = [0u8; 8];
    let mut f =
        std::fs::File::open(path).map_err(|e| session_err(path, format!("cannot be read: {e}")))?;
    let n = f.read(&mut head).unwrap_or(0);
    if n < 8 || &head != HDF5_SIGNATURE {
        return Err(session_err(
            path,
            "is not an HDF5 file (no HDF5 signature), so not a session file",
        ));
    }
    Ok(())
}

/// Whether an open error means the superblock still carries a writer's status flags.
pub(super) fn writer_mark(err: &str) -> bool {
    err.contains("already open for write") || err.contains("not already open for SWMR writing")
}

/// Clears the "open for writing" status flags a killed writer leaves in the superblock
/// (what `h5clear -s` does), so the file can be opened again.
pub(super) fn clear_status_flags(path: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let fapl = hdf5::plist::FileAccess::build()
        .libver_v110()
        .finish()
        .map_err(|e| damaged(path, e))?;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| session_err(path, "path contains a NUL byte"))?;
    let prop = c"clear_status_flags";
    hdf5::sync::sync(|| {
        let mut yes: hdf5_sys::h5::hbool_t = 1;
        // SAFETY: `fapl` is a live file-access property list; "clear_status_flags" is the
        // library's own (private) property that h5clear sets, taking an hbool_t by pointer;
        // the file id is closed before returning.
        unsafe {
            if hdf5_sys::h5p::H5Pset(fapl.id(), prop.as_ptr(), (&raw mut yes).cast()) < 0 {
                return Err(damaged(path, "cannot request clearing of its status flags"));
            }
            let fid = hdf5_sys::h5f::H5Fopen(name.as_ptr(), hdf5_sys::h5f::H5F_ACC_RDWR, fapl.id());
            if fid < 0 {
                return Err(damaged(
                    path,
                    "it is marked open for writing and the mark could not be cleared (is it read-only?)",
                ));
            }
            hdf5_sys::h5f::H5Fclose(fid);
        }
        Ok(())
    })
}
