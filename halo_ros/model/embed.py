"""Input embeddings of the non-text modalities (names as in the released `Bagel`)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_sinusoid(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """t [N] in [0, 1] (raw, not x1000) -> [N, dim]: [cos, sin] halves (DiT / BAGEL order)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )  # [D/2]
    args = t.float()[:, None] * freqs[None]  # [N, D/2]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid of t, then Linear-SiLU-Linear (`mlp.0`, `mlp.2`)."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        """t [N] -> [N, hidden]."""
        return self.mlp(timestep_sinusoid(t, self.freq_dim).to(self.mlp[0].weight.dtype))


def chunk_index_sinusoid(index: Tensor, dim: int) -> Tensor:
    """Action chunk index [K] -> [K, dim]: [sin, cos] of k * exp(-i ln1e4 / (dim/2 - 1)).

    The released `apply_sinusoidal_pos_embedding`; note sin first and the (half - 1) divisor,
    unlike the timestep sinusoid.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=index.device) * -(math.log(10000) / (half - 1)))
    args = index[:, None] * freqs[None, :]  # [K, D/2]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def sincos_2d_table(dim: int, side: int) -> np.ndarray:
    """DiT 2-D sin-cos table [side*side, dim] (rows row*side+col; first half encodes the column
    index, as the released meshgrid puts w first), computed in float64 like the release."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_w, grid_h = np.meshgrid(
        np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32)
    )
    return np.concatenate([one_d(dim // 2, grid_w), one_d(dim // 2, grid_h)], axis=1)


class PositionEmbedding(nn.Module):
    """Frozen 2-D sin-cos table; a state-dict entry (`pos_embed`) in the released checkpoints."""

    def __init__(self, max_side: int, hidden: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(max_side**2, hidden), requires_grad=False)
        if self.pos_embed.device.type != 'meta':
            self.pos_embed.data.copy_(torch.from_numpy(sincos_2d_table(hidden, max_side)).float())

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.pos_embed[position_ids]


class MLPConnector(nn.Module):
    """ViT width -> LLM width: fc1, gelu(tanh), fc2."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


def grid_position_ids(h_tokens: int, w_tokens: int, max_side: int) -> Tensor:
    """Row-major ids row * max_side + col of an h x w token grid (released 'extrapolate')."""
    rows = torch.arange(h_tokens)[:, None] * max_side
    return (rows + torch.arange(w_tokens)[None, :]).flatten()
