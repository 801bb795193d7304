"""Plain-torch building blocks: RMSNorm, SwiGLU, RoPE and masked attention (ONNX-exportable)."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in fp32, scale in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """Qwen2 MLP: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions [N] int -> cos, sin [N, head_dim] fp32 (HF Qwen2 default rope, halves repeated)."""
    inv_freq = 1.0 / (
        theta
        ** (
            torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
            / head_dim
        )
    )
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [N, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [N, D]
    return emb.cos(), emb.sin()


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [N, heads, D], cos/sin [N, D] -> [N, heads, D]; rotated in fp32 like the release."""
    xf = x.float()
    return (xf * cos[:, None, :] + _rotate_half(xf) * sin[:, None, :]).to(x.dtype)


_FUSED = contextvars.ContextVar('halo_fused_attention', default=False)


@contextlib.contextmanager
def fused_attention():
    """Inside: `attend` runs torch's fused scaled_dot_product_attention (about twice as fast
    forward and backward on a CPU). For training, where every row sees at least itself; the
    explicit form below stays what inference runs and exports."""
    token = _FUSED.set(True)
    try:
        yield
    finally:
        _FUSED.reset(token)


@dataclass(frozen=True)
class BlockDiagonal:
    """Independent sequences packed along the rows (a training batch): sequence i owns rows
    [start, stop) and attends only within them, by its own bool mask [stop - start] x 2.
    Attention runs per sequence, so packing costs no attention beyond the sequences' own."""

    blocks: tuple[tuple[int, int, Tensor], ...]


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | BlockDiagonal) -> Tensor:
    """Softmax attention with an explicit boolean mask and grouped-query heads.

    q [N, H, D], k/v [M, KV, D], mask [N, M] (True = may attend) -> [N, H * D]. Query head h
    reads kv head h // (H / KV); K/V are never repeated. Scores and softmax run in fp32, and a
    row with no visible key yields zeros. A `BlockDiagonal` mask (N = M) attends per sequence.
    """
    if isinstance(mask, BlockDiagonal):
        return torch.cat([attend(q[s:e], k[s:e], v[s:e], m) for s, e, m in mask.blocks])
    n, heads, dim = q.shape
    kv_heads = k.shape[1]
    if _FUSED.get():
        group = heads // kv_heads
        out = F.scaled_dot_product_attention(
            q.float().transpose(0, 1),  # [H, N, D]
            k.float().repeat_interleave(group, dim=1).transpose(0, 1),
            v.float().repeat_interleave(group, dim=1).transpose(0, 1),
            attn_mask=mask,
        )
        return out.transpose(0, 1).reshape(n, heads * dim).to(q.dtype)
    qg = q.float().view(n, kv_heads, heads // kv_heads, dim)  # [N, KV, G, D]
    scores = torch.einsum('nkgd,mkd->kgnm', qg, k.float()) * dim**-0.5  # [KV, G, N, M]
    scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1) * mask.to(torch.float32)  # zero fully-masked rows
    out = torch.einsum('kgnm,mkd->nkgd', probs, v.float())  # [N, KV, G, D]
    return out.reshape(n, heads * dim).to(q.dtype)
