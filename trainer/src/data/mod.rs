//! Training and validation batches.
//!
//! The batch of global step `s` is a pure function of `(seed, s)`: a run resumed from a
//! checkpoint, or a branch forked from a run, sees exactly the batches its parent would have.
//! Sources: the embedded synthetic language ([`synthetic`]), a UTF-8 text file read as bytes,
//! a text file encoded by a Hugging Face `tokenizer.json`, or pre-tokenized little-endian
//! uint16/uint32 files. Text and token files are memory-mapped, never read whole into
//! memory (a text file's bytes are its tokens); only tokenizer-encoded ids are owned. Token streams are laid out like the PyTorch reference: row `b` of
//! step `s` (1-based) is the window of `seq + 1` tokens starting at `((s−1)·B + b)·seq`,
//! wrapping around the training part; the last `val_fraction` of the stream is held out and
//! evaluated on fixed, evenly spaced windows.

pub mod rng;
pub mod synthetic;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use wsdscope_events::DataSummary;

use crate::config::{DataSpec, RunConfig};
use crate::error::{Error, Result};
use synthetic::SyntheticLanguage;

/// `batch` rows of `seq` input tokens and the `seq` next tokens of each.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    /// Row-major (batch, seq).
    pub inputs: Vec<u32>,
    /// Row-major (batch, seq): `targets[b][t] = window[b][t + 1]`.
    pub targets: Vec<u32>,
}

impl Batch {
    fn from_windows(batch: usize, seq: usize, windows: &[u32]) -> Self {
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for w in windows.chunks_exact(seq + 1) {
            inputs.extend_from_slice(&w[..seq]);
            targets.extend_from_slice(&w[1..]);
        }
        Batch {
            batch,
            seq,
            inputs,
            targets,
        }
    }

    /// Rows `rows` of this batch (one rank's share of a data-parallel step).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let span = rows.start * self.seq..rows.end * self.seq;
        Batch {
            batch: rows.len(),
            seq: self.seq,
            inputs: self.inputs[span.clone()].to_vec(),
            targets: self.targets[span].to_vec(),
        }
    }
}

/// A token stream held in memory or mapped from disk: little-endian integers of `width`
/// bytes (1 for text read as bytes).
enum Tokens {
    Owned(Vec<u32>),
    Mapped { map: Mmap, width: u8 },
}

impl Tokens {
    fn len(&self) -> usize {
        match self {
            Tokens::Owned(v) => v.len(),
            Tokens::Mapped { map, width } => map.len() / *width as usize,
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::Owned(v) => v[i],
            Tokens::Mapped { map, width: 1 } => map[i] as u32,
            Tokens::Mapped { map, width: 2 } => {
                u16::from_le_bytes([map[2 * i], map[2 * i + 1]]) as u32
            }
            Tokens::Mapped { map, .. } => {
                u32::from_le_bytes([map[4 * i], map[4 * i + 1], map[4 * i + 2], map[4 * i + 3]])
            }
        }
    }

    fn max(&self) -> u32 {
        match self {
            Tokens::Owned(v) => v.iter().copied().max().unwrap_or(0),
            Tokens::Mapped { map, width: 1 } => map.iter().copied().max().unwrap_or(0) as u32,
            _ => (0..self.len()).map(|i| self.get(i)).max().unwrap_or(0),
        }
    }
}

enum Source {
    Synthetic(SyntheticLanguage),
    Stream { tokens: Tokens, train_len: usize },
}

/// The batches of one run.
pub struct Dataset {
    source: Source,
    batch: usize,
    seq: usize,
    val: Vec<Batch>,
    summary: DataSummary,
}

impl Dataset {
    /// Opens the data a run config names and checks it against the model's vocabulary.
    pub fn open(cfg: &RunConfig) -> Result<Self> {
        let vocab = cfg.model.vocab;
        let (source, description) = match &cfg.data {
            DataSpec::Synthetic => {
                if vocab < synthetic::MIN_VOCAB {
                    return Err(Error::Config(format!(
                        "--vocab {vocab} is too small for the synthetic language; it needs at least {}",
                        synthetic::MIN_VOCAB
                    )));
                }
                (
                    Source::Synthetic(SyntheticLanguage::new(vocab, cfg.seed)),
                    format!("synthetic language (seed {}, vocab {vocab})", cfg.seed),
                )
            }
            DataSpec::Text { path } => {
                // One token per byte, read through the map: nothing is copied.
                let map = map_utf8(path)?;
                let tokens = Tokens::Mapped { map, width: 1 };
                (stream(path, tokens, cfg)?, cfg.data.describe())
            }
            DataSpec::Tokenized { path, tokenizer } => {
                let map = map_utf8(path)?;
                let text = utf8(path, &map)?;
                let tok = tokenizer::load(tokenizer)?;
                let tv = tok.get_vocab_size(true);
                if tv > vocab {
                    return Err(Error::Config(format!(
                        "tokenizer {} has {tv} tokens but --vocab is {vocab}; use --vocab {tv} or more",
                        tokenizer.display()
                    )));
                }
                let ids = tokenizer::encode(&tok, text)?;
                (stream(path, Tokens::Owned(ids), cfg)?, cfg.data.describe())
            }
            DataSpec::Tokens { path, width } => {
                let tokens = map_tokens(path, *width)?;
                (stream(path, tokens, cfg)?, cfg.data.describe())
            }
        };
        let mut ds = Dataset {
            source,
            batch: cfg.batch,
            seq: cfg.seq,
            val: Vec::new(),
            summary: DataSummary {
                description,
                entropy_floor: None,
                train_tokens: None,
                val_tokens: None,
            },
        };
        ds.build_val(cfg.eval_batches)?;
        Ok(ds)
    }

    fn build_val(&mut self, n_batches: usize) -> Result<()> {
        let (b, t) = (self.batch, self.seq);
        let mut floor_sum = 0.0;
        let mut windows = vec![0u32; b * (t + 1)];
        for k in 0..n_batches {
            match &self.source {
                Source::Synthetic(lang) => {
                    for (r, w) in windows.chunks_exact_mut(t + 1).enumerate() {
                        floor_sum += lang.document(1, (k * b + r) as u64, w);
                    }
                }
                Source::Stream { tokens, train_len } => {
                    let span = tokens.len() - *train_len - (t + 1);
                    let count = n_batches * b;
                    for (r, w) in windows.chunks_exact_mut(t + 1).enumerate() {
                        let j = k * b + r;
                        let start = train_len + if count > 1 { j * span / (count - 1) } else { 0 };
                        for (i, x) in w.iter_mut().enumerate() {
                            *x = tokens.get(start + i);
                        }
                    }
                }
            }
            self.val.push(Batch::from_windows(b, t, &windows));
        }
        match &self.source {
            Source::Synthetic(_) => {
                self.summary.entropy_floor = Some(floor_sum / (n_batches * b * t) as f64);
            }
            Source::Stream { tokens, train_len } => {
                self.summary.train_tokens = Some(*train_len as u64);
                self.summary.val_tokens = Some((tokens.len() - train_len) as u64);
            }
        }
        Ok(())
    }

    /// The training batch of 1-based global step `step`.
    pub fn train_batch(&self, step: u64) -> Batch {
        self.train_batch_of(step, self.batch)
    }

    /// Step `step`'s batch for a run of `b` rows per step: the same stream read `b` windows at
    /// a time, so step `s` holds windows `(s−1)·b … s·b−1` (a sibling with another `--batch`
    /// sees the same windows in the same order; at the run's own batch it is
    /// [`Self::train_batch`]).
    pub fn train_batch_of(&self, step: u64, b: usize) -> Batch {
        let t = self.seq;
        let first = (step.saturating_sub(1)) * b as u64;
        let mut windows = vec![0u32; b * (t + 1)];
        match &self.source {
            Source::Synthetic(lang) => {
                for (r, w) in windows.chunks_exact_mut(t + 1).enumerate() {
                    lang.document(0, first + r as u64, w);
                }
            }
            Source::Stream { tokens, train_len } => {
                let n_starts = (*train_len - t) as u64;
                for (r, w) in windows.chunks_exact_mut(t + 1).enumerate() {
                    let start = (((first + r as u64) * t as u64) % n_starts) as usize;
                    for (i, x) in w.iter_mut().enumerate() {
                        *x = tokens.get(start + i);
                    }
                }
            }
        }
        Batch::from_windows(b, t, &windows)
    }

    /// The fixed validation batches.
    pub fn val_batches(&self) -> &[Batch] {
        &self.val
    }

    pub fn summary(&self) -> &DataSummary {
        &self.summary
    }
}

/// Maps a text file and checks, over the mapped bytes, that it is UTF-8.
fn map_utf8(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(data_err(path, "is a directory, not a text file"));
    }
    // SAFETY: the file is opened read-only and we only read it; if another process truncates
    // it while we train, reads may fault, as with any mapped input.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    utf8(path, &map)?;
    Ok(map)
}

/// The mapped bytes as text, validated in place (no copy).
fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        data_err(
            path,
            format!(
                "is not UTF-8 text (invalid byte at offset {}); pass pre-tokenized files with --data-format u16|u32",
                e.valid_up_to()
            ),
        )
    })
}

fn map_tokens(path: &Path, width: u8) -> Result<Tokens> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(data_err(path, "is a directory, not a token file"));
    }
    if meta.len() % width as u64 != 0 {
        return Err(data_err(
            path,
            format!(
                "has {} bytes, not a multiple of {width}: not a uint{} token file",
                meta.len(),
                8 * width
            ),
        ));
    }
    if meta.len() == 0 {
        return Err(data_err(path, "is empty"));
    }
    // SAFETY: the file is opened read-only and we only read it; if another process truncates
    // it while we train, reads may fault, as with any mapped input.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Tokens::Mapped { map, width })
}

/// Splits a token stream into training and validation parts and checks it fits the model.
fn stream(path: &Path, tokens: Tokens, cfg: &RunConfig) -> Result<Source> {
    let n = tokens.len();
    let t = cfg.seq;
    let val_len = ((n as f64 * cfg.val_fraction) as usize).max(t + 1);
    if n < val_len + t + 2 {
        return Err(data_err(
            path,
            format!(
                "has {n} tokens; with --seq {t} it needs at least {} (a training window plus a held-out validation window)",
                val_len + t + 2
            ),
        ));
    }
    let max = tokens.max() as usize;
    if max >= cfg.model.vocab {
        return Err(data_err(
            path,
            format!(
                "holds token id {max} but the model's vocab is {}; use --vocab {} or more",
                cfg.model.vocab,
                max + 1
            ),
        ));
    }
    Ok(Source::Stream {
        train_len: n - val_len,
        tokens,
    })
}

fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: PathBuf::from(path),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OptimConfig, preset};
    use crate::schedule::{DecayShape, Schedule};

    pub(crate) fn cfg(data: DataSpec, vocab: usize) -> RunConfig {
        let mut model = preset("tiny").unwrap().model;
        model.vocab = vocab;
        RunConfig {
            preset: "tiny".into(),
            model,
            data,
            val_fraction: 0.1,
            steps: 10,
            batch: 2,
            seq: 8,
            seed: 0,
            schedule: Schedule::wsd(0.01, 10, 1, 1, DecayShape::Exp, 0.1).unwrap(),
            optim: OptimConfig::default(),
            eval_every: 0,
            eval_batches: 2,
            device: "cpu".into(),
            threads: 1,
            checkpoint_every: 0,
            checkpoint_dir: None,
            init_from: None,
            forks: Vec::new(),
            policy: Default::default(),
            memory_budget_mb: None,
            keep_branch_checkpoints: false,
            probes: Default::default(),
            reference_ops: false,
            precision: Default::default(),
            max_runs: None,
            siblings: Vec::new(),
        }
    }

    #[test]
    fn stream_windows_follow_the_reference_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.u16");
        let toks: Vec<u16> = (0..1000u16).collect();
        std::fs::write(
            &p,
            toks.iter()
                .flat_map(|t| t.to_le_bytes())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let ds = Dataset::open(&cfg(DataSpec::Tokens { path: p, width: 2 }, 1000)).unwrap();
        let b = ds.train_batch(1);
        assert_eq!(&b.inputs[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&b.targets[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b.inputs[8], 8, "row 1 starts at seq");
        assert_eq!(
            ds.train_batch(2).inputs[0],
            16,
            "step 2 row 0 starts at B·seq"
        );
        // Validation windows come from the held-out tail only.
        for v in ds.val_batches() {
            assert!(v.inputs.iter().all(|&t| t >= 900));
        }
        assert_eq!(ds.train_batch(7), ds.train_batch(7));
    }

    #[test]
    fn vocab_too_small_names_the_token_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "hello world, ".repeat(20)).unwrap();
        let e = Dataset::open(&cfg(DataSpec::Text { path: p.clone() }, 100))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("token id 119") && e.contains("--vocab 120"),
            "{e}"
        );
        let ds = Dataset::open(&cfg(DataSpec::Text { path: p }, 256)).unwrap();
        assert_eq!(ds.train_batch(1).inputs[0], b'h' as u32);
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let e = Dataset::open(&cfg(DataSpec::Text { path: missing }, 256))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope.txt"), "{e}");
        let bin = dir.path().join("b.txt");
        std::fs::write(&bin, [0xffu8, 0xfe, 0x00]).unwrap();
        let e = Dataset::open(&cfg(DataSpec::Text { path: bin }, 256))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        let odd = dir.path().join("o.u16");
        std::fs::write(&odd, [1u8, 2, 3]).unwrap();
        let e = Dataset::open(&cfg(
            DataSpec::Tokens {
                path: odd,
                width: 2,
            },
            256,
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("not a multiple of 2"), "{e}");
        let e = Dataset::open(&cfg(
            DataSpec::Text {
                path: dir.path().to_path_buf(),
            },
            256,
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("directory"), "{e}");
        let short = dir.path().join("s.txt");
        std::fs::write(&short, "abc").unwrap();
        let e = Dataset::open(&cfg(DataSpec::Text { path: short }, 256))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("has 3 tokens"), "{e}");
    }

    #[test]
    fn text_is_mapped_and_read_byte_by_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "héllo wörld, ".repeat(20)).unwrap();
        let ds = Dataset::open(&cfg(DataSpec::Text { path: p }, 256)).unwrap();
        let Source::Stream { tokens, .. } = &ds.source else {
            panic!("a text file is a token stream")
        };
        assert!(matches!(tokens, Tokens::Mapped { width: 1, .. }));
        // 'é' is two UTF-8 bytes, each its own token.
        assert_eq!(&ds.train_batch(1).inputs[..3], &[b'h' as u32, 0xc3, 0xa9]);
        // An invalid byte is reported at its offset, past valid multi-byte text.
        let bad = dir.path().join("bad.txt");
        let mut bytes = "é".repeat(10).into_bytes();
        bytes.push(0xff);
        std::fs::write(&bad, bytes).unwrap();
        let e = Dataset::open(&cfg(DataSpec::Text { path: bad }, 256))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid byte at offset 20"), "{e}");
    }

    #[test]
    fn synthetic_batches_are_pure_and_report_a_floor() {
        let c = cfg(DataSpec::Synthetic, 512);
        let a = Dataset::open(&c).unwrap();
        let b = Dataset::open(&c).unwrap();
        assert_eq!(a.train_batch(5), b.train_batch(5));
        assert_ne!(a.train_batch(5), a.train_batch(6));
        let floor = a.summary().entropy_floor.unwrap();
        assert!(floor > 0.0 && floor < (512f64).ln(), "{floor}");
    }
}
