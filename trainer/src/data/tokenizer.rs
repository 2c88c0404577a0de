//! Hugging Face tokenizers: load a `tokenizer.json`, encode a corpus, and train a byte-level
//! BPE tokenizer from a text file (`wsdscope tokenizer train`) so nothing needs a download.

use std::path::Path;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer, TokenizerBuilder};

use crate::error::{Error, Result};

/// The special token a trained tokenizer reserves (id 0 after training).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Smallest vocabulary a byte-level BPE can have: 256 bytes plus the special token.
pub const MIN_BPE_VOCAB: usize = 257;

pub fn load(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::Tokenizer(format!(
            "{}: no such file",
            path.display()
        )));
    }
    Tokenizer::from_file(path)
        .map_err(|e| Error::Tokenizer(format!("{}: not a tokenizer.json ({e})", path.display())))
}

/// Encodes `text` to ids, in parallel over ~64 KiB pieces cut at line ends.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(1 << 16);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        if cut < rest.len()
            && let Some(nl) = rest[..cut].rfind('\n')
        {
            cut = nl + 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let encs = tok
        .encode_batch(pieces, false)
        .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
    Ok(encs
        .iter()
        .flat_map(|e| e.get_ids().iter().copied())
        .collect())
}

/// Trains a byte-level BPE tokenizer of `vocab` tokens on `file` and writes `out`.
/// Returns the vocabulary size actually reached (smaller if the corpus has fewer merges).
pub fn train(file: &Path, vocab: usize, out: &Path) -> Result<usize> {
    if !(MIN_BPE_VOCAB..=1_000_000).contains(&vocab) {
        return Err(Error::Config(format!(
            "--vocab {vocab} is not allowed for a byte-level BPE; it must be in {MIN_BPE_VOCAB}..=1000000"
        )));
    }
    let meta = std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
    if meta.is_dir() || meta.len() == 0 {
        return Err(Error::Data {
            path: file.into(),
            message: "is a directory or empty; tokenizer training needs a non-empty text file"
                .into(),
        });
    }
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .build();
    // No prefix space: decoding gives back exactly the bytes that were encoded.
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut tok = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<NormalizerWrapper>)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(Some(byte_level))
        .with_decoder(Some(byte_level))
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let file_str = file.to_string_lossy().into_owned();
    tok.train_from_files(&mut trainer, vec![file_str])
        .map_err(|e| Error::Tokenizer(format!("training on {} failed: {e}", file.display())))?;
    tok.save(out, false)
        .map_err(|e| Error::Tokenizer(format!("cannot write {}: {e}", out.display())))?;
    Ok(tok.get_vocab_size(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_saves_loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c.txt");
        let text =
            "the quick brown fox jumps over the lazy dog. ".repeat(200) + "naïve café ünïcode\n";
        std::fs::write(&corpus, &text).unwrap();
        let out = dir.path().join("tokenizer.json");
        let n = train(&corpus, 300, &out).unwrap();
        assert!(n > 257 && n <= 300, "{n}");
        let tok = load(&out).unwrap();
        let ids = encode(&tok, &text).unwrap();
        assert!(
            ids.len() < text.len() / 2,
            "BPE compresses: {} ids for {} bytes",
            ids.len(),
            text.len()
        );
        assert!(
            tok.decode(&ids, false).unwrap() == text,
            "decode(encode(text)) differs from text"
        );
    }

    #[test]
    fn rejects_tiny_vocab_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = train(&dir.path().join("x"), 100, &dir.path().join("o")).unwrap_err();
        assert!(e.to_string().contains("--vocab 100"), "{e}");
        let e = load(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }
}
