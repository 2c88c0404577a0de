//! `wsdscope export`: a checkpoint or a session, written for other tools.
//!
//! This module owns what every format shares: telling a checkpoint from a session, refusing
//! an input the format cannot take, and the output directory's life. Each format writes into a
//! fresh staging directory beside `--out`, which is renamed into place only once complete, so
//! an interrupted or failed export leaves nothing half-written (and, with `--force`, the old
//! directory stays until the new one is whole).

mod csv;
mod hf;
mod tensorboard;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::{ExportArgs, ExportFormat};

/// What `export` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A checkpoint directory: one `step-N`, or a directory of them (the latest is taken).
    Checkpoint(PathBuf),
    /// A session file (HDF5).
    Session(PathBuf),
}

/// The 8-byte signature every HDF5 file starts with (at offset 0 for files `record` writes).
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Tells a checkpoint from a session, or says what `path` is not.
pub fn classify(path: &Path) -> Result<Input> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        return match wsdscope_trainer::checkpoint::resolve(path) {
            Ok(step_dir) => Ok(Input::Checkpoint(step_dir)),
            Err(_) => bail!(
                "{} is a directory without a checkpoint in it (expected a step-N directory \
                 with {} and {}, or a directory of them)",
                path.display(),
                wsdscope_trainer::checkpoint::STATE_FILE,
                wsdscope_trainer::checkpoint::MODEL_FILE
            ),
        };
    }
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f =
            fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        f.read(&mut head).unwrap_or(0)
    };
    if n == 8 && &head == HDF5_SIGNATURE {
        Ok(Input::Session(path.to_path_buf()))
    } else {
        bail!(
            "{} is neither a checkpoint directory nor a session file (HDF5) written by \
             `wsdscope record`",
            path.display()
        )
    }
}

/// Refuses a format/input pair the format cannot express.
fn check_pair(format: ExportFormat, input: &Input) -> Result<()> {
    match (format, input) {
        (ExportFormat::Hf, Input::Checkpoint(_)) => Ok(()),
        (ExportFormat::Tensorboard | ExportFormat::Csv, Input::Session(_)) => Ok(()),
        (ExportFormat::Hf, Input::Session(p)) => bail!(
            "--format hf exports a checkpoint directory, and {} is a session file (export a \
             session with --format tensorboard or csv)",
            p.display()
        ),
        (f, Input::Checkpoint(p)) => bail!(
            "--format {} exports a session file, and {} is a checkpoint (export a checkpoint \
             with --format hf)",
            format_name(f),
            p.display()
        ),
    }
}

fn format_name(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Hf => "hf",
        ExportFormat::Tensorboard => "tensorboard",
        ExportFormat::Csv => "csv",
    }
}

/// Where `--out` may be written: absent, an empty directory, or anything with `force`.
fn check_out(out: &Path, force: bool) -> Result<()> {
    match fs::symlink_metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            let empty = fs::read_dir(out)
                .with_context(|| format!("cannot read {}", out.display()))?
                .next()
                .is_none();
            if empty || force {
                Ok(())
            } else {
                bail!(
                    "--out {} exists and is not empty (pass --force to replace it)",
                    out.display()
                )
            }
        }
        Ok(_) if force => Ok(()),
        Ok(_) => bail!(
            "--out {} exists and is not a directory (pass --force to replace it)",
            out.display()
        ),
    }
}

/// A staging directory beside `out` (same filesystem, so the final rename is atomic), removed
/// on drop unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(out: &Path) -> Result<Self> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let name = out
            .file_name()
            .with_context(|| format!("--out {} names no directory", out.display()))?;
        let dir = parent.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).ok();
        }
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    /// Moves the finished directory to `out`, replacing what was there (already allowed by
    /// `check_out`).
    fn commit(mut self, out: &Path) -> Result<()> {
        if let Ok(m) = fs::symlink_metadata(out) {
            let old = self.dir.with_extension("old");
            fs::rename(out, &old).with_context(|| format!("cannot move {} away", out.display()))?;
            fs::rename(&self.dir, out)
                .with_context(|| format!("cannot move the export to {}", out.display()))?;
            if m.is_dir() {
                fs::remove_dir_all(&old).ok();
            } else {
                fs::remove_file(&old).ok();
            }
        } else {
            fs::rename(&self.dir, out)
                .with_context(|| format!("cannot move the export to {}", out.display()))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// What the summary says of a session whose writer was mid-flush.
fn cut_note(e: &wsdscope_sessions::export::Export) -> String {
    match e.cut_at {
        Some(n) => format!(
            " (the session is still being written: its first {n} events, up to the last complete flush)"
        ),
        None => String::new(),
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    let input = classify(&args.input)?;
    check_pair(args.format, &input)?;
    check_out(&args.out, args.force)?;
    let staging = Staging::new(&args.out)?;
    let summary = match (&input, args.format) {
        (Input::Checkpoint(dir), ExportFormat::Hf) => hf::write(dir, &staging.dir)?,
        (Input::Session(file), ExportFormat::Tensorboard) => {
            tensorboard::write(file, &staging.dir)?
        }
        (Input::Session(file), ExportFormat::Csv) => csv::write(file, &staging.dir)?,
        _ => unreachable!("check_pair refused this pair"),
    };
    staging.commit(&args.out)?;
    eprintln!("wrote {}: {summary}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_neither_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.txt");
        fs::write(&f, "hello").unwrap();
        let e = classify(&f).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("neither"), "{e}");
        let e = classify(dir.path()).unwrap_err().to_string();
        assert!(e.contains("without a checkpoint"), "{e}");
    }

    #[test]
    fn an_hdf5_signature_is_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.h5");
        let mut bytes = HDF5_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0; 64]);
        fs::write(&f, bytes).unwrap();
        assert_eq!(classify(&f).unwrap(), Input::Session(f.clone()));
        let e = check_pair(ExportFormat::Hf, &Input::Session(f))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--format hf") && e.contains("session"), "{e}");
    }

    #[test]
    fn a_non_empty_out_needs_force_and_an_empty_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert!(check_out(&out, false).is_ok());
        fs::create_dir(&out).unwrap();
        assert!(check_out(&out, false).is_ok());
        fs::write(out.join("x"), "x").unwrap();
        let e = check_out(&out, false).unwrap_err().to_string();
        assert!(e.contains("--force") && e.contains("not empty"), "{e}");
        assert!(check_out(&out, true).is_ok());
    }

    #[test]
    fn staging_is_removed_unless_committed_and_replaces_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        {
            let s = Staging::new(&out).unwrap();
            fs::write(s.dir.join("half"), "x").unwrap();
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "left a staging dir"
        );
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old"), "old").unwrap();
        let s = Staging::new(&out).unwrap();
        fs::write(s.dir.join("new"), "new").unwrap();
        s.commit(&out).unwrap();
        assert!(out.join("new").is_file() && !out.join("old").exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "left a staging dir"
        );
    }
}
