//! `export --format csv` (not written yet).

use std::path::Path;

use anyhow::{Result, bail};

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, _out: &Path) -> Result<String> {
    bail!("--format csv is not available yet ({})", input.display())
}
