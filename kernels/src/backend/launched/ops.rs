//! [`Backend`] for [`Launched`]: buffers from the pool or the device, the linear layers as
//! the device's GEMMs, and every other op as the launch of [`crate::launch`] (or
//! [`crate::launch::step`]) handed to the device's [`Gpu`](crate::launch::Gpu), after its
//! buffers' lengths and element types are checked.

use super::{DevBuf, Device, Launched, common, rows};
use crate::backend::{
    AttnSaved, AttnShape, Backend, Dt, HeadCols, Linear, Tokens, buf_err, float_of, need,
    need_range,
};
use crate::error::Error;
use crate::launch::step::{self as ls, TokenGroups};
use crate::launch::{self, AttnDims};

impl<D: Device> Backend for Launched<D> {
    type Buf = DevBuf<D::Mem>;

    fn name(&self) -> &'static str {
        self.name
    }

    fn take(&self, len: usize, dt: Dt) -> Result<Self::Buf, Error> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = pool.iter().position(|b| b.len == len && b.dt == dt) {
                return Ok(pool.swap_remove(i));
            }
        }
        self.fresh(len, dt, false)
    }

    fn give(&self, bufs: impl IntoIterator<Item = Self::Buf>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.extend(bufs.into_iter().filter(|b| b.mem.is_some() && b.len > 0));
    }

    fn zeros(&self, len: usize, dt: Dt) -> Result<Self::Buf, Error> {
        self.fresh(len, dt, true)
    }

    fn upload_f32(&self, xs: &[f32], dt: Dt) -> Result<Self::Buf, Error> {
        let bytes: Vec<u8> = match dt {
            Dt::F32 => xs.iter().flat_map(|x| x.to_ne_bytes()).collect(),
            Dt::Bf16 => xs
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_ne_bytes())
                .collect(),
            Dt::U32 => return Err(buf_err("upload", "f32 data cannot be stored as u32")),
        };
        let (mem, ptr) = self.dev.upload(&bytes, dt)?;
        Ok(DevBuf {
            mem: Some(mem),
            ptr,
            len: xs.len(),
            dt,
        })
    }

    fn upload_u32(&self, xs: &[u32]) -> Result<Self::Buf, Error> {
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let (mem, ptr) = self.dev.upload(&bytes, Dt::U32)?;
        Ok(DevBuf {
            mem: Some(mem),
            ptr,
            len: xs.len(),
            dt: Dt::U32,
        })
    }

    fn download_f32(&self, b: &Self::Buf) -> Result<Vec<f32>, Error> {
        let bytes = self.dev.download(b.ptr, b.len * b.dt.size())?;
        match b.dt {
            Dt::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            Dt::Bf16 => Ok(bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32())
                .collect()),
            Dt::U32 => Err(buf_err("download", "a u32 buffer read as f32")),
        }
    }

    fn linear(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        self.gemm(
            "linear",
            y,
            (x, s.n, s.inp, false),
            (w, s.out, s.inp, true),
            acc,
        )
    }

    fn linear_dx(
        &self,
        dy: &Self::Buf,
        w: &Self::Buf,
        dx: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        self.gemm(
            "linear_dx",
            dx,
            (dy, s.n, s.out, false),
            (w, s.out, s.inp, false),
            acc,
        )
    }

    fn linear_dw(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        dw: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        self.gemm(
            "linear_dw",
            dw,
            (dy, s.n, s.out, true),
            (x, s.n, s.inp, false),
            acc,
        )
    }

    fn rms_norm_fwd(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f64,
        y: &mut Self::Buf,
        rstd: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "rms_norm";
        let e = common(OP, &[("x", x.dt), ("w", w.dt), ("y", y.dt)])?;
        let (h, n) = (w.len, rows(OP, x.len, w.len)?);
        need(OP, "y", y, x.len, x.dt)?;
        need(OP, "rstd", rstd, n, Dt::F32)?;
        let (yp, rp) = (y.writable(OP, "y")?, rstd.writable(OP, "rstd")?);
        launch::rms_norm_fwd(
            &mut self.dev.gpu(),
            e,
            x.ptr,
            w.ptr,
            yp,
            rp,
            n,
            h,
            eps as f32,
        )
    }

    fn rms_norm_bwd(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        rstd: &Self::Buf,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "rms_norm_bwd";
        let e = common(
            OP,
            &[
                ("x", x.dt),
                ("w", w.dt),
                ("dy", dy.dt),
                ("dx", dx.dt),
                ("dw", dw.dt),
            ],
        )?;
        let (h, n) = (w.len, rows(OP, x.len, w.len)?);
        need(OP, "dy", dy, x.len, x.dt)?;
        need(OP, "dx", dx, x.len, x.dt)?;
        need(OP, "dw", dw, h, x.dt)?;
        need(OP, "rstd", rstd, n, Dt::F32)?;
        let (dxp, dwp) = (dx.writable(OP, "dx")?, dw.writable(OP, "dw")?);
        launch::rms_norm_bwd(
            &mut self.dev.gpu(),
            e,
            x.ptr,
            w.ptr,
            dy.ptr,
            rstd.ptr,
            dxp,
            dwp,
            n,
            h,
        )
    }

    fn rope(
        &self,
        x: &Self::Buf,
        cos: &Self::Buf,
        sin: &Self::Buf,
        t: usize,
        d: usize,
        inverse: bool,
        y: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "rope";
        let e = common(
            OP,
            &[("x", x.dt), ("cos", cos.dt), ("sin", sin.dt), ("y", y.dt)],
        )?;
        rows(OP, x.len, t * d)?;
        if !d.is_multiple_of(2) || cos.len < t * d || sin.len < t * d {
            return Err(buf_err(
                OP,
                format!("tables of {} for T {t}, D {d} (even)", cos.len.min(sin.len)),
            ));
        }
        need(OP, "y", y, x.len, x.dt)?;
        let yp = y.writable(OP, "y")?;
        launch::rope(
            &mut self.dev.gpu(),
            e,
            x.ptr,
            cos.ptr,
            sin.ptr,
            yp,
            x.len,
            t,
            d,
            inverse,
        )
    }

    fn attention_fwd(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
        scale: f64,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "attention";
        let e = common(
            OP,
            &[("q", q.dt), ("k", k.dt), ("v", v.dt), ("out", out.dt)],
        )?;
        let (nq, nk) = (s.b * s.h * s.t * s.d, s.b * s.hkv * s.t * s.d);
        need(OP, "q", q, nq, q.dt)?;
        need(OP, "k", k, nk, q.dt)?;
        need(OP, "v", v, nk, q.dt)?;
        need(OP, "out", out, nq, q.dt)?;
        need(OP, "lse", lse, s.b * s.h * s.t, Dt::F32)?;
        let (op, lp) = (out.writable(OP, "out")?, lse.writable(OP, "lse")?);
        launch::attention_fwd(
            &mut self.dev.gpu(),
            e,
            [q.ptr, k.ptr, v.ptr],
            op,
            lp,
            dims(s, scale),
        )
    }

    fn attention_bwd(
        &self,
        x: AttnSaved<'_, Self::Buf>,
        s: AttnShape,
        scale: f64,
        [dq, dk, dv]: [&mut Self::Buf; 3],
    ) -> Result<(), Error> {
        const OP: &str = "attention_bwd";
        let e = common(
            OP,
            &[
                ("q", x.q.dt),
                ("k", x.k.dt),
                ("v", x.v.dt),
                ("out", x.out.dt),
                ("dout", x.dout.dt),
                ("dq", dq.dt),
                ("dk", dk.dt),
                ("dv", dv.dt),
            ],
        )?;
        let (nq, nk) = (s.b * s.h * s.t * s.d, s.b * s.hkv * s.t * s.d);
        let dt = x.q.dt;
        for (what, b, len) in [
            ("q", x.q, nq),
            ("k", x.k, nk),
            ("v", x.v, nk),
            ("out", x.out, nq),
            ("dout", x.dout, nq),
        ] {
            need(OP, what, b, len, dt)?;
        }
        need(OP, "lse", x.lse, s.b * s.h * s.t, Dt::F32)?;
        need(OP, "dq", dq, nq, dt)?;
        need(OP, "dk", dk, nk, dt)?;
        need(OP, "dv", dv, nk, dt)?;
        let grads = [
            dq.writable(OP, "dq")?,
            dk.writable(OP, "dk")?,
            dv.writable(OP, "dv")?,
        ];
        launch::attention_bwd(
            &mut self.dev.gpu(),
            e,
            [x.q.ptr, x.k.ptr, x.v.ptr, x.out.ptr, x.dout.ptr, x.lse.ptr],
            grads,
            dims(s, scale),
        )
    }

    fn swiglu_fwd(&self, gu: &Self::Buf, f: usize, y: &mut Self::Buf) -> Result<(), Error> {
        const OP: &str = "swiglu";
        let e = common(OP, &[("gu", gu.dt), ("y", y.dt)])?;
        let n = rows(OP, gu.len, 2 * f)?;
        need(OP, "y", y, n * f, gu.dt)?;
        let yp = y.writable(OP, "y")?;
        ls::swiglu_paired_fwd(&mut self.dev.gpu(), e, gu.ptr, yp, n, f)
    }

    fn swiglu_bwd(
        &self,
        gu: &Self::Buf,
        dy: &Self::Buf,
        f: usize,
        dgu: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "swiglu_bwd";
        let e = common(OP, &[("gu", gu.dt), ("dy", dy.dt), ("dgu", dgu.dt)])?;
        let n = rows(OP, gu.len, 2 * f)?;
        need(OP, "dy", dy, n * f, gu.dt)?;
        need(OP, "dgu", dgu, gu.len, gu.dt)?;
        let dp = dgu.writable(OP, "dgu")?;
        ls::swiglu_paired_bwd(&mut self.dev.gpu(), e, gu.ptr, dy.ptr, dp, n, f)
    }

    fn cross_entropy_fwd(
        &self,
        logits: &Self::Buf,
        targets: &Self::Buf,
        lse: &mut Self::Buf,
        loss: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "cross_entropy";
        let e = float_of(OP, "logits", logits)?;
        let n = targets.len;
        need(OP, "targets", targets, n, Dt::U32)?;
        let v = rows(OP, logits.len, n.max(1))?;
        need(OP, "lse", lse, n, Dt::F32)?;
        need(OP, "loss", loss, 1, Dt::F32)?;
        let (lp, op) = (lse.writable(OP, "lse")?, loss.writable(OP, "loss")?);
        launch::cross_entropy_fwd(
            &mut self.dev.gpu(),
            e,
            logits.ptr,
            targets.ptr,
            lp,
            op,
            n,
            v,
        )
    }

    fn cross_entropy_bwd(
        &self,
        logits: &mut Self::Buf,
        targets: &Self::Buf,
        lse: &Self::Buf,
        g: f32,
    ) -> Result<(), Error> {
        const OP: &str = "cross_entropy_bwd";
        let e = float_of(OP, "logits", logits)?;
        let n = targets.len;
        need(OP, "targets", targets, n, Dt::U32)?;
        let v = rows(OP, logits.len, n.max(1))?;
        need(OP, "lse", lse, n, Dt::F32)?;
        let xp = logits.writable(OP, "logits")?;
        // The kernel reads the upstream gradient on the device (no host sync on a GPU).
        let up = self.upload_f32(&[g], Dt::F32)?;
        // Each thread reads its logit before writing its gradient there: in place is safe.
        launch::cross_entropy_bwd(
            &mut self.dev.gpu(),
            e,
            xp,
            targets.ptr,
            lse.ptr,
            up.ptr,
            xp,
            n,
            v,
        )
    }

    fn embed(
        &self,
        emb: &Self::Buf,
        tokens: &Tokens<Self::Buf>,
        scale: f32,
        h: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "embed";
        let e = common(OP, &[("emb", emb.dt), ("h", h.dt)])?;
        need(OP, "ids", &tokens.ids, tokens.len(), Dt::U32)?;
        let hd = rows(OP, h.len, tokens.len().max(1))?;
        let v = rows(OP, emb.len, hd.max(1))?;
        let hp = h.writable(OP, "h")?;
        ls::embed_fwd(
            &mut self.dev.gpu(),
            e,
            emb.ptr,
            tokens.ids.ptr,
            hp,
            scale,
            tokens.len(),
            hd,
            v,
        )
    }

    fn embed_bwd(
        &self,
        dh: &Self::Buf,
        tokens: &Tokens<Self::Buf>,
        scale: f32,
        demb: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "embed_bwd";
        let e = float_of(OP, "dh", dh)?;
        let n = tokens.len();
        let u = tokens.uniq.len;
        need(OP, "starts", &tokens.starts, u + 1, Dt::U32)?;
        need(OP, "order", &tokens.order, n, Dt::U32)?;
        let hd = rows(OP, dh.len, n.max(1))?;
        if demb.dt != Dt::F32 || !demb.len.is_multiple_of(hd.max(1)) {
            return Err(buf_err(OP, "demb must be f32 rows of the hidden size"));
        }
        let dp = demb.writable(OP, "demb")?;
        let groups = TokenGroups {
            uniq: tokens.uniq.ptr,
            starts: tokens.starts.ptr,
            order: tokens.order.ptr,
            u,
        };
        ls::embed_bwd(&mut self.dev.gpu(), e, dh.ptr, groups, dp, scale, hd)
    }

    fn split_heads(&self, x: &Self::Buf, c: HeadCols, y: &mut Self::Buf) -> Result<(), Error> {
        const OP: &str = "split_heads";
        let e = common(OP, &[("x", x.dt), ("y", y.dt)])?;
        need(OP, "x", x, c.b * c.t * c.width, x.dt)?;
        need(OP, "y", y, c.len(), x.dt)?;
        let yp = y.writable(OP, "y")?;
        ls::split_heads(&mut self.dev.gpu(), e, x.ptr, yp, c)
    }

    fn merge_heads(&self, x: &Self::Buf, c: HeadCols, y: &mut Self::Buf) -> Result<(), Error> {
        const OP: &str = "merge_heads";
        let e = common(OP, &[("x", x.dt), ("y", y.dt)])?;
        need(OP, "x", x, c.len(), x.dt)?;
        need(OP, "y", y, c.b * c.t * c.width, x.dt)?;
        let yp = y.writable(OP, "y")?;
        ls::merge_heads(&mut self.dev.gpu(), e, x.ptr, yp, c)
    }

    fn add_scaled(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        s: f32,
        y: &mut Self::Buf,
    ) -> Result<(), Error> {
        const OP: &str = "add_scaled";
        let e = common(OP, &[("a", a.dt), ("b", b.dt), ("y", y.dt)])?;
        need(OP, "b", b, a.len, a.dt)?;
        need(OP, "y", y, a.len, a.dt)?;
        let yp = y.writable(OP, "y")?;
        ls::add_scaled(&mut self.dev.gpu(), e, a.ptr, b.ptr, s, yp, a.len)
    }

    fn add(&self, a: &mut Self::Buf, b: &Self::Buf) -> Result<(), Error> {
        const OP: &str = "add";
        let e = common(OP, &[("a", a.dt), ("b", b.dt)])?;
        need(OP, "b", b, a.len, a.dt)?;
        let ap = a.writable(OP, "a")?;
        // a + 1·b is a + b exactly.
        ls::add_scaled(&mut self.dev.gpu(), e, ap, b.ptr, 1.0, ap, a.len)
    }

    fn scaled(&self, x: &Self::Buf, s: f32, y: &mut Self::Buf) -> Result<(), Error> {
        const OP: &str = "scaled";
        let e = common(OP, &[("x", x.dt), ("y", y.dt)])?;
        need(OP, "y", y, x.len, x.dt)?;
        let yp = y.writable(OP, "y")?;
        ls::scale(&mut self.dev.gpu(), e, x.ptr, s, yp, x.len)
    }

    fn scale(&self, x: &mut Self::Buf, s: f32) -> Result<(), Error> {
        const OP: &str = "scale";
        let e = float_of(OP, "x", x)?;
        let xp = x.writable(OP, "x")?;
        ls::scale(&mut self.dev.gpu(), e, xp, s, xp, x.len)
    }

    fn convert(
        &self,
        x: &Self::Buf,
        x_at: usize,
        y: &mut Self::Buf,
        y_at: usize,
        len: usize,
    ) -> Result<(), Error> {
        const OP: &str = "convert";
        let (from, to) = (float_of(OP, "x", x)?, float_of(OP, "y", y)?);
        need_range(OP, "x", x, x_at, len)?;
        need_range(OP, "y", y, y_at, len)?;
        y.writable(OP, "y")?;
        ls::convert(&mut self.dev.gpu(), from, to, x.at(x_at), y.at(y_at), len)
    }
}

fn dims(s: AttnShape, scale: f64) -> AttnDims {
    AttnDims {
        b: s.b,
        h: s.h,
        hkv: s.hkv,
        t: s.t,
        d: s.d,
        scale: scale as f32,
    }
}
