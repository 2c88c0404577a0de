//! Free space: how much the session file may still grow, and how much it must keep free to
//! close cleanly.

use std::path::Path;

use super::writer::SessionWriter;

impl SessionWriter {
    pub(super) fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Free space the file may still grow into: the file system's space available to this
    /// user, and the process's file-size limit (`ulimit -f`), whichever is smaller.
    pub(super) fn space_left(&self) -> Option<u64> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fs = {
            use std::os::unix::ffi::OsStrExt;
            let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statvfs the call fills.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            (unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } == 0)
                .then(|| st.f_bavail as u64 * st.f_frsize as u64)
        };
        // SAFETY: getrlimit fills the zeroed struct it is given.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        let limit = (unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut lim) } == 0
            && lim.rlim_cur != libc::RLIM_INFINITY)
            .then(|| (lim.rlim_cur as u64).saturating_sub(self.file_len()));
        match (fs, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Free space to keep: room for a few more flushes and closing the file.
    pub(super) fn margin(&self) -> u64 {
        (2 << 20) + 4 * self.max_growth
    }
}

/// Bytes in binary units, e.g. `1.5 MiB`.
pub(super) fn human_bytes(b: u64) -> String {
    let mut v = b as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return format!("{v:.1} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}
