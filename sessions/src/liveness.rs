//! Whether a session file's writer is still alive, told without touching the file's data.
//!
//! A live recorder holds a shared (read) lock on one byte of its session file, far beyond the
//! end of any real file, taken with an open-file-description lock (`F_OFD_SETLK`). The kernel
//! drops it when the writer's process dies, however it dies. A reader asks with
//! `F_OFD_GETLK`, which reports a conflicting lock without taking one, so asking never
//! disturbs the writer or other readers. These locks are separate from the `flock` locks HDF5
//! takes itself, and a read lock conflicts with nothing but a write lock on that byte, which
//! nobody takes.
//!
//! Readers use this to tell a live SWMR writer's "open for writing" mark from a dead writer's
//! (only a dead writer's mark may be cleared) and to show a follower that the process writing
//! a session has gone.

use std::fs::File;
use std::path::Path;

/// The locked byte: far past the end of any session file, so it never covers data.
#[cfg(target_os = "linux")]
const LOCK_OFFSET: libc::off_t = 1 << 62;

/// A live writer's lock; released when dropped (or when the process dies).
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the writer's lock on `path` (a file this process is writing).
    #[cfg(target_os = "linux")]
    pub(crate) fn acquire(path: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = File::open(path)?;
        let mut fl = flock(libc::F_RDLCK as libc::c_short);
        // SAFETY: `file` is an open descriptor and `fl` a fully initialised `struct flock`
        // (l_pid 0, as OFD locks require); the call only reads `fl`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &raw mut fl) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(WriterLock { _file: file })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn acquire(path: &Path) -> std::io::Result<Self> {
        Ok(WriterLock {
            _file: File::open(path)?,
        })
    }
}

#[cfg(target_os = "linux")]
fn flock(kind: libc::c_short) -> libc::flock {
    // SAFETY: `struct flock` is plain old data; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = LOCK_OFFSET;
    fl.l_len = 1;
    fl
}

/// Whether a process is writing `path` now: `Some(true)` while a recorder holds it,
/// `Some(false)` when none does (finished, or killed), `None` where this cannot be told (the
/// file cannot be opened, or the platform lacks open-file-description locks).
pub fn writer_alive(path: &Path) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let file = File::open(path).ok()?;
        let mut fl = flock(libc::F_WRLCK as libc::c_short);
        // SAFETY: as in `acquire`; F_OFD_GETLK writes the conflicting lock (or F_UNLCK) back
        // into `fl`, which lives for the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &raw mut fl) };
        if rc != 0 {
            return None;
        }
        Some(fl.l_type != libc::F_UNLCK as libc::c_short)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.h5");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(writer_alive(&p), Some(false));
        let lock = WriterLock::acquire(&p).unwrap();
        assert_eq!(writer_alive(&p), Some(true));
        // Asking twice changes nothing, and readers may still open the file.
        assert_eq!(writer_alive(&p), Some(true));
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        drop(lock);
        assert_eq!(writer_alive(&p), Some(false));
        assert_eq!(writer_alive(&dir.path().join("missing")), None);
    }
}
