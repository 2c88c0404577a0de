#!/usr/bin/env python3
"""PyTorch reference of one wsdscope training run, for trainer/tests/torch_reference.rs.

The test writes a case: the model's Hugging Face config, the optimiser settings, and for each
step its learning rate and token batch (JSON), plus the initial weights (safetensors, HF
names). This script trains the same MiniCPM on the same batches with PyTorch's autograd,
`torch.nn.utils.clip_grad_norm_` and `torch.optim.AdamW` in float32, and writes what the test
compares: the gradients of the first step and the weights after it, every step's loss and
pre-clip gradient norm, and the weights after the last step.

The model is MiniCPM (Hu et al. 2024, arXiv 2404.06395) as wsdscope defines it:

    h = embed[x] * scale_emb
    for each of the L layers, with s = scale_depth / sqrt(L):
        h = h + s * attention(rms_norm(h))      causal, RoPE (half split), grouped KV heads
        h = h + s * mlp(rms_norm(h))            down(silu(gate(x)) * up(x))
    logits = rms_norm(h) / (hidden / dim_model_base) @ embed.T      the head is the embedding
    loss = mean cross-entropy of the next token

AdamW has the muP groups: the embedding (lr, weight decay), the 2-D hidden matrices
(lr / width_mult, weight decay) and the RMSNorm gains (lr, no weight decay).

    python minicpm_ref.py CASE.json INIT.safetensors OUT.safetensors

Needs torch and numpy only (safetensors files are read and written here by hand).
"""

import argparse
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# safetensors: an 8-byte little-endian header length, a JSON header, then the raw tensor bytes.

_DTYPES = {"F32": np.float32, "F64": np.float64}


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[base + start : base + end], dtype=_DTYPES[info["dtype"]])
        tensors[name] = torch.from_numpy(data.reshape(info["shape"]).copy())
    return tensors


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------------------------
# The model.


class Config:
    def __init__(self, hf):
        self.hidden = hf["hidden_size"]
        self.layers = hf["num_hidden_layers"]
        self.heads = hf["num_attention_heads"]
        self.kv_heads = hf["num_key_value_heads"]
        self.head_dim = self.hidden // self.heads
        self.scale_emb = hf["scale_emb"]
        self.scale_depth = hf["scale_depth"]
        self.width_mult = self.hidden / hf["dim_model_base"]
        self.eps = hf["rms_norm_eps"]
        self.theta = hf["rope_theta"]


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(t, head_dim, theta):
    """cos and sin (T, head_dim): the angle of position p and pair i is p / theta^(2i/d),
    the same angles for both halves of the head dim."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def rope(x, cos, sin):
    """x (B, h, T, d) rotated: x*cos + [-x2, x1]*sin, with x1, x2 the halves of the head dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention(x, p, cfg, b, t, cos, sin):
    """Causal self-attention on x (B*T, H); query head h reads KV head h // (heads/kv_heads)."""
    d = cfg.head_dim

    def heads(y, n):
        return y.view(b, t, n, d).transpose(1, 2)  # (B, n, T, d)

    q = rope(heads(x @ p["self_attn.q_proj.weight"].T, cfg.heads), cos, sin)
    k = rope(heads(x @ p["self_attn.k_proj.weight"].T, cfg.kv_heads), cos, sin)
    v = heads(x @ p["self_attn.v_proj.weight"].T, cfg.kv_heads)
    group = cfg.heads // cfg.kv_heads
    k = k.repeat_interleave(group, dim=1)  # (B, heads, T, d)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, heads, T, T)
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    o = scores.softmax(dim=-1) @ v  # (B, heads, T, d)
    o = o.transpose(1, 2).reshape(b * t, cfg.heads * d)
    return o @ p["self_attn.o_proj.weight"].T


def mlp(x, p):
    gate = x @ p["mlp.gate_proj.weight"].T
    up = x @ p["mlp.up_proj.weight"].T
    return (F.silu(gate) * up) @ p["mlp.down_proj.weight"].T


def loss_of(params, cfg, inputs, targets):
    """Mean next-token cross-entropy of inputs -> targets, both (B, T) int64."""
    b, t = inputs.shape
    cos, sin = rope_tables(t, cfg.head_dim, cfg.theta)
    embed = params["model.embed_tokens.weight"]  # (V, H)
    h = embed[inputs.reshape(-1)] * cfg.scale_emb  # (B*T, H)
    residual = cfg.scale_depth / math.sqrt(cfg.layers)
    for i in range(cfg.layers):
        prefix = f"model.layers.{i}."
        p = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        h = h + residual * attention(
            rms_norm(h, p["input_layernorm.weight"], cfg.eps), p, cfg, b, t, cos, sin
        )
        h = h + residual * mlp(rms_norm(h, p["post_attention_layernorm.weight"], cfg.eps), p)
    h = rms_norm(h, params["model.norm.weight"], cfg.eps) / cfg.width_mult
    logits = h @ embed.T  # (B*T, V), tied head
    return F.cross_entropy(logits, targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# The optimiser's muP groups and the run.


def lr_multiplier_and_decay(name, rank, cfg, weight_decay):
    if name.endswith("embed_tokens.weight"):
        return 1.0, weight_decay
    if rank == 2:
        return 1.0 / cfg.width_mult, weight_decay
    return 1.0, 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("case", help="JSON: model (HF config), optim, steps [{lr, inputs, targets}]")
    ap.add_argument("init", help="initial weights, safetensors with HF names")
    ap.add_argument("out", help="where to write the results (safetensors)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    case = json.load(open(args.case))
    cfg = Config(case["model"])
    opt = case["optim"]
    params = {n: t.float().requires_grad_() for n, t in read_safetensors(args.init).items()}

    groups = []
    for name, p in params.items():
        mult, wd = lr_multiplier_and_decay(name, p.dim(), cfg, opt["weight_decay"])
        groups.append({"params": [p], "lr_mult": mult, "weight_decay": wd, "lr": 0.0})
    adamw = torch.optim.AdamW(
        groups, betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"], foreach=False
    )

    out, losses, grad_norms = {}, [], []
    for s, step in enumerate(case["steps"]):
        inputs = torch.tensor(step["inputs"], dtype=torch.int64)
        targets = torch.tensor(step["targets"], dtype=torch.int64)
        adamw.zero_grad()
        loss = loss_of(params, cfg, inputs, targets)
        loss.backward()
        if s == 0:
            for name, p in params.items():
                out[f"grad.{name}"] = p.grad.clone()
        # The norm before clipping; with clip 0 there is no clipping.
        all_params = list(params.values())
        if opt["clip"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(all_params, opt["clip"])
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in all_params]))
        for g in adamw.param_groups:
            g["lr"] = step["lr"] * g["lr_mult"]
        adamw.step()
        if s == 0:
            for name, p in params.items():
                out[f"step1.{name}"] = p.detach().clone()
        losses.append(loss.item())
        grad_norms.append(norm.item())

    for name, p in params.items():
        out[f"param.{name}"] = p
    out["loss"] = torch.tensor(losses, dtype=torch.float32)
    out["grad_norm"] = torch.tensor(grad_norms, dtype=torch.float32)
    write_safetensors(args.out, out)


if __name__ == "__main__":
    main()
