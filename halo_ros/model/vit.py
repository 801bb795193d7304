"""SigLIP vision tower in NaViT form: images of any aspect ratio packed into one sequence.

Names follow `vit_model.vision_model.*` of the released checkpoint: the patch conv is stored as a
Linear over (ph, pw, c)-ordered patches, positions are a learned table indexed row*side+col, and
there is no pooling head. Attention is block-diagonal over the packed images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halo_ros.model.config import ViTConfig
from halo_ros.model.layers import BlockDiagonal, attend


def patchify(image: Tensor, patch: int) -> Tensor:
    """image [C, H, W] (H, W multiples of patch) -> [H/p * W/p, p*p*C] in (ph, pw, c) order."""
    c, h, w = image.shape
    x = image.reshape(c, h // patch, patch, w // patch, patch)
    return torch.einsum('chpwq->hwpqc', x).reshape(-1, patch * patch * c)


def block_diagonal_mask(seqlens: list[int], device: torch.device | None = None) -> Tensor:
    """Packed sequence lengths -> bool [T, T], True within the same image."""
    ids = torch.repeat_interleave(
        torch.arange(len(seqlens), device=device), torch.tensor(seqlens, device=device)
    )
    return ids[:, None] == ids[None, :]


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Linear(3 * cfg.patch_size**2, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_patches_per_side**2, cfg.hidden_size)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        t, d = x.shape
        q = self.q_proj(x).view(t, self.num_heads, -1)  # [T, H, D]
        k = self.k_proj(x).view(t, self.num_heads, -1)
        v = self.v_proj(x).view(t, self.num_heads, -1)
        return self.out_proj(attend(q, k, v, mask))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


class SiglipLayer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SiglipLayer(cfg) for _ in range(cfg.num_layers)])


class SiglipTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, patches: Tensor, position_ids: Tensor, mask: Tensor) -> Tensor:
        """patches [T, p*p*3], position_ids [T], mask [T, T] -> [T, hidden]."""
        x = self.embeddings.patch_embedding(patches) + self.embeddings.position_embedding(
            position_ids
        )
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.post_layernorm(x)


class SiglipVisionModel(nn.Module):
    """`vit_model`: wraps `vision_model` so parameter names match the release."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.vision_model = SiglipTransformer(cfg)

    def forward(self, patches: Tensor, position_ids: Tensor, seqlens: list[int]) -> Tensor:
        """Packed patches of several images [T, p*p*3] -> [T, hidden]."""
        if len(seqlens) == 1:  # one image (what inference runs and exports): a plain mask
            mask = block_diagonal_mask(seqlens, patches.device)  # [T, T]
        else:  # many (a training batch): attention image by image, not over [T, T]
            ends = torch.tensor(seqlens).cumsum(0).tolist()
            mask = BlockDiagonal(
                tuple(
                    (e - n, e, torch.ones(n, n, dtype=torch.bool, device=patches.device))
                    for n, e in zip(seqlens, ends, strict=True)
                )
            )
        return self.vision_model(patches, position_ids, mask)
