"""Prefix KV cache as plain tensors (exportable; a padded copy carries a key-validity mask)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from halo_ros.model.config import LLMConfig


@dataclass(frozen=True)
class KVCache:
    """Per-layer K (post q/k-norm, post-RoPE) and V of every prefix token.

    k, v: [L, P, KV, D]. `next_rope` is the RoPE id the next block starts at (released rules:
    text advances it per token, a clean image or latent block by one).
    """

    k: Tensor
    v: Tensor
    next_rope: int

    @classmethod
    def empty(
        cls,
        cfg: LLMConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = 'cpu',
    ) -> KVCache:
        shape = (cfg.num_layers, 0, cfg.num_kv_heads, cfg.head_dim)
        return cls(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
            0,
        )

    @property
    def length(self) -> int:
        return self.k.shape[1]

    def append(self, k: Tensor, v: Tensor, rope_advance: int) -> KVCache:
        """New rows k/v [L, N, KV, D] -> a new cache (this one is left untouched)."""
        return KVCache(
            torch.cat([self.k, k.to(self.k.dtype)], dim=1),
            torch.cat([self.v, v.to(self.v.dtype)], dim=1),
            self.next_rope + rope_advance,
        )

    def padded(self, capacity: int) -> tuple[Tensor, Tensor, Tensor]:
        """Zero-pad to a fixed length for static-shape graphs -> (k, v [L, capacity, KV, D],
        key_valid [capacity] bool)."""
        if capacity < self.length:
            raise ValueError(f'KVCache.padded: capacity {capacity} < cache length {self.length}')
        pad = capacity - self.length
        k = torch.nn.functional.pad(self.k, (0, 0, 0, 0, 0, pad))
        v = torch.nn.functional.pad(self.v, (0, 0, 0, 0, 0, pad))
        valid = torch.arange(capacity, device=self.k.device) < self.length
        return k, v, valid

    def key_valid(self) -> Tensor:
        return torch.ones(self.length, dtype=torch.bool, device=self.k.device)
