//! Appending the buffered rows to the file, and what a failed append means: whether it can
//! pass (and is retried) or ends the recording.

use std::path::Path;

use super::hooks::TestHooks;
use super::writer::SessionWriter;

/// A write that failed, and whether retrying may help.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) message: String,
    pub(super) transient: bool,
}

impl From<hdf5::Error> for Failure {
    fn from(e: hdf5::Error) -> Self {
        let message = e.to_string();
        Failure {
            transient: transient(&message),
            message,
        }
    }
}

/// Whether an HDF5 error message describes a failure that can pass: a lock held elsewhere,
/// an interrupted or busy operation. HDF5 puts the system's errno into its messages.
fn transient(message: &str) -> bool {
    let errno = message
        .split("errno = ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<i32>().ok());
    match errno {
        Some(e) => [
            libc::EAGAIN,
            libc::EINTR,
            libc::EBUSY,
            libc::ENOLCK,
            libc::ETIMEDOUT,
        ]
        .contains(&e),
        // No errno: a library-level failure. Give it the retry window too; if it persists
        // it ends the recording then.
        None => !message.contains("No space left"),
    }
}

/// Identity of a file on disk, to notice when the session file is removed or replaced.
pub(super) fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SessionWriter {
    /// Appends every buffered row and flushes the file. A failure leaves each column's
    /// unwritten rows buffered, so calling it again continues where it stopped.
    pub(super) fn flush(&mut self) -> std::result::Result<(), Failure> {
        let before = self.file_len();
        if self.identity.is_some() && identity(&self.path) != self.identity {
            return Err(Failure {
                message: "the session file was removed or replaced while it was being written"
                    .into(),
                transient: false,
            });
        }
        for s in self.slots.iter_mut().flatten() {
            s.flush()?;
        }
        for run in self.ended.drain(..) {
            if let Some(slot) = self.slots.get_mut(run as usize) {
                *slot = None;
            }
        }
        if self.hooks.busy_flushes > 0 && self.taken.iter().any(Option::is_some) {
            self.hooks.busy_flushes -= 1;
            return Err(Failure {
                message: "H5Dwrite(): unable to lock file, errno = 11, error message = 'Resource temporarily unavailable' (injected by WSDSCOPE_TEST_FAULTS)".into(),
                transient: true,
            });
        }
        if let Some(point) = self.pause_in_flush.take() {
            TestHooks::pause(point, self.durable_seq);
        }
        for t in &mut self.probes {
            t.flush()?;
        }
        self.run_ids.flush()?;
        self.events.flush()?;
        self.file.as_ref().expect("open").flush()?;
        let grew = self.file_len().saturating_sub(before);
        self.max_growth = grew.max(self.max_growth - self.max_growth / 8);
        self.durable_seq = self.seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_decides_what_is_retried() {
        assert!(transient(
            "H5Fopen(): unable to lock file, errno = 11, error message = 'Resource temporarily unavailable'"
        ));
        assert!(!transient(
            "H5Dwrite(): write failed, errno = 28, error message = 'No space left on device'"
        ));
        assert!(!transient("file write failed: errno = 2"));
        assert!(transient("H5Dwrite(): some library failure"));
    }
}
