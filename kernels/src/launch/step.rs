//! The launches of `step.cu`: the training step's glue between the fused ops and the GEMMs
//! (embedding lookup and its scatter-add backward, heads out of and into token rows, SwiGLU
//! on paired [gate | up] rows, element-wise ops, dtype conversions). All grid-stride loops of
//! [`BLOCK`] threads over the elements written, so any size fits the grid.

use super::desc::{Arg, DevPtr, Elem, Gpu, Launch, int, name};
use crate::error::Error;

const SRC: &str = "step.cu";

/// A grid-stride launch of `kernel` over `n` elements.
fn over(kernel: String, n: usize) -> Launch {
    Launch::grid_stride(SRC, kernel, n)
}

/// h (n_tok, hd) = emb[ids] · scale for u32 `ids` (n_tok) and emb (v, hd); a row whose id
/// is ≥ v becomes NaN (callers check ids first: this only keeps the kernel in bounds).
#[allow(clippy::too_many_arguments)]
pub fn embed_fwd(
    g: &mut impl Gpu,
    e: Elem,
    emb: DevPtr,
    ids: DevPtr,
    h: DevPtr,
    scale: f32,
    n_tok: usize,
    hd: usize,
    v: usize,
) -> Result<(), Error> {
    let n = n_tok * hd;
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("embed_fwd", e), n)
            .ptrs(&[emb, ids, h])
            .arg(Arg::Float(scale))
            .arg(Arg::Size(n as u64))
            .arg(Arg::Int(int("embed", "H", hd)?))
            .arg(Arg::Int(int("embed", "V", v)?)),
    )
}

/// The tokens of a batch grouped by id, for the embedding's scatter-add: `uniq` (u) the
/// distinct ids, `order` (n_tok) the token indices sorted stably by id, and `starts` (u + 1)
/// where each id's tokens begin in `order`. All u32 device buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGroups {
    pub uniq: DevPtr,
    pub starts: DevPtr,
    pub order: DevPtr,
    /// Distinct ids.
    pub u: usize,
}

/// demb (v, hd; f32) += scale · dh (n_tok, hd) scattered by id, each row's tokens added in
/// token order (deterministic: one thread per (id, column), no atomics).
pub fn embed_bwd(
    g: &mut impl Gpu,
    e: Elem,
    dh: DevPtr,
    groups: TokenGroups,
    demb: DevPtr,
    scale: f32,
    hd: usize,
) -> Result<(), Error> {
    let n = groups.u * hd;
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("embed_bwd", e), n)
            .ptrs(&[dh, groups.uniq, groups.starts, groups.order, demb])
            .arg(Arg::Float(scale))
            .arg(Arg::Size(n as u64))
            .arg(Arg::Int(int("embed", "H", hd)?)),
    )
}

/// Where heads sit in token rows (b·t, width): `nh` heads of `d` columns from `col0` on.
/// The heads layout is (b, nh, t, d).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadCols {
    pub b: usize,
    pub t: usize,
    pub width: usize,
    pub col0: usize,
    pub nh: usize,
    pub d: usize,
}

impl HeadCols {
    /// Elements of the heads layout.
    pub fn len(&self) -> usize {
        self.b * self.nh * self.t * self.d
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<[Arg; 5], Error> {
        const OP: &str = "heads";
        if self.col0 + self.nh * self.d > self.width {
            return Err(Error::Shape {
                op: OP,
                msg: format!(
                    "{} heads of {} from column {} overrun rows of {}",
                    self.nh, self.d, self.col0, self.width
                ),
            });
        }
        Ok([
            Arg::Int(int(OP, "T", self.t)?),
            Arg::Int(int(OP, "width", self.width)?),
            Arg::Int(int(OP, "col0", self.col0)?),
            Arg::Int(int(OP, "heads", self.nh)?),
            Arg::Int(int(OP, "head dim", self.d)?),
        ])
    }
}

fn heads(g: &mut impl Gpu, kernel: String, x: DevPtr, y: DevPtr, c: HeadCols) -> Result<(), Error> {
    let args = c.check()?;
    let n = c.len();
    if n == 0 {
        return Ok(());
    }
    let mut l = over(kernel, n).ptrs(&[x, y]).arg(Arg::Size(n as u64));
    l.args.extend(args);
    g.launch(&l)
}

/// y (b, nh, t, d) = the columns `c` of token rows x (b·t, width).
pub fn split_heads(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    y: DevPtr,
    c: HeadCols,
) -> Result<(), Error> {
    heads(g, name("split_heads", e), x, y, c)
}

/// The columns `c` of token rows y (b·t, width) = x (b, nh, t, d); other columns untouched.
pub fn merge_heads(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    y: DevPtr,
    c: HeadCols,
) -> Result<(), Error> {
    heads(g, name("merge_heads", e), x, y, c)
}

/// y (rows, f) = silu(gate) ⊙ up for rows gu (rows, 2f) = [gate | up].
pub fn swiglu_paired_fwd(
    g: &mut impl Gpu,
    e: Elem,
    gu: DevPtr,
    y: DevPtr,
    rows: usize,
    f: usize,
) -> Result<(), Error> {
    let n = rows * f;
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("swiglu_paired_fwd", e), n)
            .ptrs(&[gu, y])
            .arg(Arg::Size(n as u64))
            .arg(Arg::Int(int("swiglu", "F", f)?)),
    )
}

/// dgu (rows, 2f) = [dgate | dup] of [`swiglu_paired_fwd`] for upstream dy (rows, f).
#[allow(clippy::too_many_arguments)]
pub fn swiglu_paired_bwd(
    g: &mut impl Gpu,
    e: Elem,
    gu: DevPtr,
    dy: DevPtr,
    dgu: DevPtr,
    rows: usize,
    f: usize,
) -> Result<(), Error> {
    let n = rows * f;
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("swiglu_paired_bwd", e), n)
            .ptrs(&[gu, dy, dgu])
            .arg(Arg::Size(n as u64))
            .arg(Arg::Int(int("swiglu", "F", f)?)),
    )
}

/// y = a + s·b over n elements (y may be a).
#[allow(clippy::too_many_arguments)]
pub fn add_scaled(
    g: &mut impl Gpu,
    e: Elem,
    a: DevPtr,
    b: DevPtr,
    s: f32,
    y: DevPtr,
    n: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("add_scaled", e), n)
            .ptrs(&[a, b])
            .arg(Arg::Float(s))
            .arg(Arg::Ptr(y))
            .arg(Arg::Size(n as u64)),
    )
}

/// y = s·x over n elements (y may be x).
pub fn scale(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    s: f32,
    y: DevPtr,
    n: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(name("scale", e), n)
            .arg(Arg::Ptr(x))
            .arg(Arg::Float(s))
            .arg(Arg::Ptr(y))
            .arg(Arg::Size(n as u64)),
    )
}

/// y (n, `to`) = x (n, `from`): a copy, or a conversion (f32 → bf16 rounds to nearest even).
pub fn convert(
    g: &mut impl Gpu,
    from: Elem,
    to: Elem,
    x: DevPtr,
    y: DevPtr,
    n: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &over(format!("convert_{}_{}", from.suffix(), to.suffix()), n)
            .ptrs(&[x, y])
            .arg(Arg::Size(n as u64)),
    )
}
