//! `export --format tensorboard`: the session (a live one as far as it is written) through the
//! sessions crate's TensorBoard writer.

use std::path::Path;

use anyhow::Result;
use wsdscope_sessions::export::{self, tensorboard};

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, out: &Path) -> Result<String> {
    let e = export::read(input)?;
    let w = tensorboard::write(&e, out)?;
    Ok(format!(
        "{} run directories, {} events with {} scalars{}",
        w.runs,
        w.records,
        w.values,
        super::cut_note(&e)
    ))
}
