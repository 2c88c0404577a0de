//! `export --format csv`: the session (a live one as far as it is written) through the
//! sessions crate's CSV writer.

use std::path::Path;

use anyhow::Result;
use wsdscope_sessions::export::{self, csv};

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, out: &Path) -> Result<String> {
    let e = export::read(input)?;
    let w = csv::write(&e, out)?;
    Ok(format!(
        "{} CSV files, {} rows with {} values{}",
        w.files,
        w.records,
        w.values,
        super::cut_note(&e)
    ))
}
