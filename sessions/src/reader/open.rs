//! Opening a session file: as it is, through a padded copy when it lost its tail, or after
//! clearing the open-for-writing mark a dead writer left; then checking its format version.

use std::path::Path;

use hdf5::{File, OpenMode};

use super::repair::{check_is_hdf5, clear_status_flags, truncation, writer_mark};
use super::session::{Session, damaged};
use crate::error::{Result, session_err};
use crate::layout::FORMAT_VERSION;

impl Session {
    /// Opens a session for reading. Works on a file another process is still writing (SWMR)
    /// and on one whose writer was killed: if a dead writer (SWMR or not) left the file
    /// marked as open for writing, the mark is cleared first.
    pub fn open(path: &Path) -> Result<Self> {
        check_is_hdf5(path)?;
        if let Some((len, eof)) = truncation(path) {
            // A write that failed part-way (a full disk) leaves the header promising bytes that
            // never arrived; everything flushed before it is intact. Read a copy padded to the
            // promised length; if even that fails, the file is truly cut short.
            return Self::open_padded(path, len, eof).map_err(|e| {
                session_err(
                    path,
                    format!(
                        "is truncated: it has {len} bytes but its header says {eof}, and what it has does not read ({e})"
                    ),
                )
            });
        }
        Self::open_file(path, path)
    }

    fn open_padded(path: &Path, len: u64, eof: u64) -> Result<Self> {
        let dir = tempfile::tempdir()
            .map_err(|e| session_err(path, format!("cannot make a temporary copy: {e}")))?;
        let copy = dir.path().join("recovered.h5");
        std::fs::copy(path, &copy)
            .map_err(|e| session_err(path, format!("cannot copy it: {e}")))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .map_err(|e| session_err(path, e.to_string()))?;
        f.set_len(eof)
            .map_err(|e| session_err(path, e.to_string()))?;
        drop(f);
        let mut s = Self::open_file(path, &copy)?;
        s.events()?; // every dataset must read back
        s.recovered = Some((len, eof));
        s._copy = Some(dir);
        Ok(s)
    }

    /// Opens `actual` (the file itself, or a recovered copy) on behalf of `path`.
    fn open_file(path: &Path, actual: &Path) -> Result<Self> {
        let file = match open_swmr(actual) {
            Ok(f) => f,
            // An "open for writing" mark: left by a SWMR writer ("already open for write"), or
            // by a plain writer ("not already open for SWMR writing": format-2 recorders left
            // SWMR mode briefly to add datasets). Only a dead writer's mark is cleared; a live
            // writer is never touched.
            Err(e) if writer_mark(&e.to_string()) => {
                if crate::liveness::writer_alive(actual) == Some(true) {
                    return Err(session_err(
                        path,
                        "is open for plain (non-SWMR) writing by a live process; try again when it has finished",
                    ));
                }
                clear_status_flags(actual)?;
                open_swmr(actual).map_err(|e| damaged(path, e))?
            }
            Err(e) => return Err(damaged(path, e)),
        };
        let format_version = match file.attr("format_version") {
            Ok(a) => a.read_scalar::<u32>().map_err(|e| damaged(path, e))?,
            Err(_) => {
                return Err(session_err(
                    path,
                    "is an HDF5 file but not a wsdscope session (it has no format_version attribute)",
                ));
            }
        };
        if format_version > FORMAT_VERSION {
            return Err(session_err(
                path,
                format!(
                    "was written by a newer wsdscope (session format {format_version}; this one reads up to {FORMAT_VERSION}); upgrade wsdscope"
                ),
            ));
        }
        let mut s = Session {
            path: path.to_path_buf(),
            file,
            format_version,
            log: Vec::new(),
            runs: Vec::new(),
            recovered: None,
            _copy: None,
        };
        s.refresh()?;
        Ok(s)
    }
}

/// Opens for SWMR reading with a bounded number of metadata read retries: HDF5's default
/// (100, with exponential back-off) makes a damaged file look like a hang of many minutes.
fn open_swmr(path: &Path) -> hdf5::Result<File> {
    File::with_options()
        .with_fapl(|p| {
            p.metadata_read_attempts(READ_ATTEMPTS).chunk_cache(
                crate::recorder::CHUNK_CACHE_SLOTS,
                crate::recorder::CHUNK_CACHE_BYTES,
                1.0,
            )
        })
        .open_as(path, OpenMode::ReadSWMR)
}

/// Metadata read attempts of a SWMR reader (about one second of back-off in all).
const READ_ATTEMPTS: u32 = 10;
