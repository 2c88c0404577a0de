//! The open session: the file, what was read from its event log (the events it keeps whole and
//! a [`RunInfo`] per run), and the plain dataset reads the other parts of the reader build on.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File};

use crate::error::{Error, Result, session_err};
use crate::layout::run_group;
use crate::{EndReason, ModelSummary, PhaseBounds, RunEvent, RunId};

/// One run of a session, as far as it has been recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: RunId,
    pub name: String,
    pub parent: Option<RunId>,
    pub fork_step: Option<u64>,
    pub model: ModelSummary,
    pub phases: PhaseBounds,
    pub start_step: u64,
    /// Recorded step rows.
    pub steps: u64,
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub final_train_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub evals: u64,
    /// How the run ended, if it has.
    pub end: Option<(EndReason, Option<String>)>,
    pub wall_s: Option<f64>,
    pub config: serde_json::Value,
}

/// An open session file.
pub struct Session {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) format_version: u32,
    pub(super) log: Vec<(u64, RunEvent)>,
    pub(super) runs: Vec<RunInfo>,
    /// Set when the file lost its tail (a write failed, e.g. a full disk) and is read through
    /// a zero-padded temporary copy: (bytes present, bytes the header promises).
    pub(super) recovered: Option<(u64, u64)>,
    pub(super) _copy: Option<tempfile::TempDir>,
}

pub(super) fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    session_err(path, format!("is damaged or truncated ({what})"))
}

impl Session {
    /// `Some((present, promised))` bytes when the file lost its tail and was recovered.
    pub fn recovered(&self) -> Option<(u64, u64)> {
        self.recovered
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// A root string attribute (`producer`, `created`, `config`), if present.
    pub fn root_attr(&self, name: &str) -> Option<String> {
        let a = self.file.attr(name).ok()?;
        a.read_scalar::<VarLenUnicode>()
            .ok()
            .map(|v| v.as_str().to_string())
    }

    pub(super) fn dataset(&self, run: RunId, name: &str) -> Result<Dataset> {
        let ds = self
            .file
            .dataset(&format!("{}/{name}", run_group(run)))
            .map_err(|e| damaged(&self.path, e))?;
        let _ = ds.refresh();
        Ok(ds)
    }

    pub(super) fn len(&self, ds: &Dataset) -> u64 {
        ds.shape().first().copied().unwrap_or(0) as u64
    }

    pub(super) fn read_at<T: hdf5::H5Type + Copy>(&self, ds: &Dataset, i: u64) -> Result<T> {
        let v = ds
            .read_slice_1d::<T, _>(i as usize..i as usize + 1)
            .map_err(|e| damaged(&self.path, e))?;
        Ok(v[0])
    }

    /// Whether run `run` has a dataset `name` (format-1 files lack the newer ones).
    pub(super) fn has(&self, run: RunId, name: &str) -> bool {
        self.file.link_exists(&format!("{}/{name}", run_group(run)))
    }

    pub(super) fn read_all<T: hdf5::H5Type>(&self, run: RunId, name: &str) -> Result<Vec<T>> {
        self.dataset(run, name)?
            .read_raw()
            .map_err(|e| damaged(&self.path, e))
    }
}
