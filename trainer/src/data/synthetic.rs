//! The embedded default data: a seeded synthetic language with a known entropy floor.
//!
//! A document (one training window) is a run of *chunks*. Token 0 is the separator `S`,
//! token 1 the copy marker `R`, the rest are content tokens. Each chunk is:
//!
//! 1. `ℓ` fresh content tokens, ℓ uniform in `[MIN_CHUNK, MAX_CHUNK]`, drawn from a fixed sparse
//!    Markov chain: every content token has 4 distinct successors taken with probability
//!    ½, ¼, ⅛, ⅛ (the first token of a document is uniform). A bigram model learns this.
//! 2. With probability ½, the marker `R` followed by a verbatim copy of the chunk's ℓ tokens.
//!    Predicting a copy needs to look back to the chunk's start: only attention (an
//!    induction-style head) can learn it, no n-gram model can.
//! 3. The separator `S`.
//!
//! The generator knows, at every position, the exact conditional distribution of the next token
//! given everything before it (the chunk length is hidden, so the end of a chunk has a known
//! hazard `1/(MAX_CHUNK − i + 1)` after `i ≥ MIN_CHUNK` fresh tokens). Averaging that conditional
//! entropy over the validation windows gives the Bayes-optimal loss on exactly those windows:
//! the floor a perfect model reaches.

use super::rng::{SplitMix64, hash};

pub const SEP: u32 = 0;
pub const COPY: u32 = 1;
const FIRST_CONTENT: u32 = 2;
pub const MIN_CHUNK: usize = 4;
pub const MAX_CHUNK: usize = 16;
const P_COPY: f64 = 0.5;
const SUCCESSORS: usize = 4;
/// Successor slot probabilities (as in the reference trainer's Markov stream).
const SLOT_P: [f64; SUCCESSORS] = [0.5, 0.25, 0.125, 0.125];
/// Smallest vocabulary that leaves room for distinct successors.
pub const MIN_VOCAB: usize = FIRST_CONTENT as usize + SUCCESSORS + 1;

/// Entropy in nats of a categorical distribution.
fn entropy(ps: &[f64]) -> f64 {
    ps.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum()
}

/// The fixed language: its Markov table. Windows are generated on demand.
#[derive(Debug, Clone)]
pub struct SyntheticLanguage {
    vocab: usize,
    seed: u64,
    /// `succ[v * 4 + k]`: the k-th successor of content token v (content index space).
    succ: Vec<u32>,
}

impl SyntheticLanguage {
    pub fn new(vocab: usize, seed: u64) -> Self {
        assert!(vocab >= MIN_VOCAB, "vocab {vocab} < {MIN_VOCAB}");
        let content = vocab - FIRST_CONTENT as usize;
        let mut rng = SplitMix64::new(hash(&[seed, 0x7ab1e]));
        let mut succ = Vec::with_capacity(content * SUCCESSORS);
        for _ in 0..content {
            let start = succ.len();
            while succ.len() < start + SUCCESSORS {
                let c = rng.below(content as u64) as u32;
                if !succ[start..].contains(&c) {
                    succ.push(c);
                }
            }
        }
        SyntheticLanguage { vocab, seed, succ }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    fn content(&self) -> usize {
        self.vocab - FIRST_CONTENT as usize
    }

    fn slot(u: f64) -> usize {
        let mut acc = 0.0;
        for (k, p) in SLOT_P.iter().enumerate() {
            acc += p;
            if u < acc {
                return k;
            }
        }
        SUCCESSORS - 1
    }

    /// Probability that a chunk ends after `i` fresh tokens, given it has at least `i`.
    fn hazard(i: usize) -> f64 {
        if i < MIN_CHUNK {
            0.0
        } else {
            1.0 / (MAX_CHUNK - i + 1) as f64
        }
    }

    /// Writes document `index` of domain `domain` (0 train, 1 validation) into `out`
    /// (`out.len()` tokens) and returns the sum of the exact conditional entropies of
    /// `out[1..]` given their prefixes, in nats.
    pub fn document(&self, domain: u64, index: u64, out: &mut [u32]) -> f64 {
        let n = out.len();
        let mut rng = SplitMix64::new(hash(&[self.seed, domain, index]));
        let h_markov = entropy(&SLOT_P);
        let h_copy = entropy(&[P_COPY, 1.0 - P_COPY]);
        let mut pos = 0usize;
        let mut ent = 0.0;
        // Entropy of the token about to be written at `pos` (only targets, pos ≥ 1, count).
        let mut push = |pos: &mut usize, tok: u32, h: f64, ent: &mut f64| -> bool {
            if *pos >= n {
                return false;
            }
            out[*pos] = tok;
            if *pos >= 1 {
                *ent += h;
            }
            *pos += 1;
            *pos < n
        };
        push(&mut pos, SEP, 0.0, &mut ent);
        let mut cur: Option<u32> = None; // last content token (content index space)
        let mut chunk = Vec::with_capacity(MAX_CHUNK);
        'doc: loop {
            let len = MIN_CHUNK + rng.below((MAX_CHUNK - MIN_CHUNK + 1) as u64) as usize;
            chunk.clear();
            for i in 0..len {
                // The position before this token saw i fresh tokens of the chunk: a chunk end
                // was possible with hazard h(i) (never for i = 0).
                let hz = Self::hazard(i);
                let (tok, h_next) = match cur {
                    None => {
                        let c = rng.below(self.content() as u64) as u32;
                        (c, (self.content() as f64).ln())
                    }
                    Some(prev) => {
                        let k = Self::slot(rng.unit());
                        (self.succ[prev as usize * SUCCESSORS + k], h_markov)
                    }
                };
                let h = entropy(&[hz, 1.0 - hz]) + hz * h_copy + (1.0 - hz) * h_next;
                cur = Some(tok);
                chunk.push(tok);
                if !push(&mut pos, tok + FIRST_CONTENT, h, &mut ent) {
                    break 'doc;
                }
            }
            // The chunk ends here: its end token (R or S) was drawn with the hazard at i = len.
            let hz = Self::hazard(len);
            let h_end = entropy(&[hz, 1.0 - hz]) + hz * h_copy + (1.0 - hz) * h_markov;
            if rng.unit() < P_COPY {
                if !push(&mut pos, COPY, h_end, &mut ent) {
                    break;
                }
                for &tok in &chunk {
                    if !push(&mut pos, tok + FIRST_CONTENT, 0.0, &mut ent) {
                        break 'doc;
                    }
                }
                if !push(&mut pos, SEP, 0.0, &mut ent) {
                    break;
                }
            } else if !push(&mut pos, SEP, h_end, &mut ent) {
                break;
            }
        }
        ent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_pure_functions_of_seed_domain_and_index() {
        let lang = SyntheticLanguage::new(64, 3);
        let (mut a, mut b) = (vec![0; 200], vec![0; 200]);
        lang.document(0, 5, &mut a);
        SyntheticLanguage::new(64, 3).document(0, 5, &mut b);
        assert_eq!(a, b);
        lang.document(1, 5, &mut b);
        assert_ne!(a, b, "validation domain differs from training");
        assert!(a.iter().all(|&t| (t as usize) < 64));
    }

    #[test]
    fn copies_repeat_the_chunk_verbatim() {
        let lang = SyntheticLanguage::new(256, 0);
        let mut d = vec![0; 4000];
        lang.document(0, 0, &mut d);
        let mut copies = 0;
        let mut chunk_start = 1;
        for i in 1..d.len() {
            if d[i] == COPY {
                let chunk = &d[chunk_start..i];
                let end = (i + 1 + chunk.len()).min(d.len());
                assert_eq!(&d[i + 1..end], &chunk[..end - i - 1]);
                copies += 1;
            }
            if d[i] == SEP {
                chunk_start = i + 1;
            }
        }
        assert!(copies > 50, "{copies}");
    }

    #[test]
    fn floor_agrees_with_a_counting_estimate() {
        // The Markov part alone costs 1.213 nats per fresh token; copies cost 0. The exact
        // per-document entropy must sit between 0 and that bound, and agree across documents.
        let lang = SyntheticLanguage::new(512, 0);
        let mut d = vec![0; 129];
        let floors: Vec<f64> = (0..200)
            .map(|i| lang.document(1, i, &mut d) / 128.0)
            .collect();
        let mean = floors.iter().sum::<f64>() / floors.len() as f64;
        assert!(mean > 0.5 && mean < 1.6, "{mean}");
    }
}
