"""Prefix segments: what `prefill` puts into the KV cache, in the released layout."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class TextSegment:
    """Token ids without framing; prefill wraps them as <|im_start|> ids <|im_end|>."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class ViTImageSegment:
    """A normalised image [3, H, W] in [-1, 1], H and W multiples of the ViT patch (14)."""

    image: Tensor


@dataclass(frozen=True)
class VAEImageSegment:
    """A normalised image [3, H, W] (multiples of 16), VAE-encoded into clean gen tokens."""

    image: Tensor


@dataclass(frozen=True)
class LatentSegment:
    """Clean latent tokens [h*w, 64] (e.g. a sampled subgoal) on an h x w token grid."""

    tokens: Tensor
    grid_hw: tuple[int, int]


Segment = TextSegment | ViTImageSegment | VAEImageSegment | LatentSegment
