"""The static prefix layout every graph shares, and the host-side feed that fills it.

HALO's prefix is, in order, every camera as `[vs] ViT tokens [ve]`, the framed prompt, the framed
newest reasoning text and the clean subgoal latents `[vs] latents [ve]` (released layout,
`anchors-model-trt.md` §1.2). To keep every shape static (CUDA graphs, TensorRT engines) the
rows sit in fixed regions of a padded buffer of `prefix_rows`:

    [camera 0 | camera 1 | ... | text region (text_capacity rows) | latent block]

Unused rows are padding: their segment id is -1, so no row attends to them and the key mask of
the flow steps drops them. Attention is fixed by (segment id, causal) per row: a row sees every
earlier segment and its own segment (causally for text), which is what prefilling segment by
segment computes. RoPE ids follow the release (text +1 per token, an image or latent block +1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from halo_ros.model.config import HaloConfig
from halo_ros.model.preprocess import target_size, vae_size


class PrefixTooLongError(ValueError):
    """The text of a prefix does not fit the layout's text region."""


@dataclass(frozen=True)
class PrefixLayout:
    cameras: int  # camera frames in every prefix
    vit_hw: tuple[int, int]  # frame size (px) after the release's resize, multiples of the patch
    vit_grid: tuple[int, int]  # ViT tokens per frame (rows, cols)
    text_capacity: int  # rows of the text region: prompt + reasoning, each framed
    latent_grid: tuple[int, int]  # subgoal latent tokens (rows, cols)
    latent_hw: tuple[int, int]  # subgoal image size (px) the latent grid decodes to
    decode_capacity: int  # rows a reasoning cycle may append by decoding

    def __post_init__(self) -> None:
        for name in ('cameras', 'text_capacity', 'decode_capacity'):
            if getattr(self, name) < 1:
                raise ValueError(f'PrefixLayout.{name} must be positive, got {getattr(self, name)}')

    @classmethod
    def for_model(
        cls,
        cfg: HaloConfig,
        *,
        cameras: int,
        image_hw: tuple[int, int],
        text_capacity: int = 160,
        decode_capacity: int = 64,
    ) -> PrefixLayout:
        """The layout of frames of `image_hw` (what the cameras deliver) for this model."""
        h, w = image_hw
        vit = cfg.vit
        vh, vw = target_size(h, w, vit.image_max_px, vit.image_min_px, vit.patch_size)
        stride = cfg.latent_downsample
        lh, lw = vae_size(cfg, h, w)
        return cls(
            cameras=cameras,
            vit_hw=(vh, vw),
            vit_grid=(vh // vit.patch_size, vw // vit.patch_size),
            text_capacity=text_capacity,
            latent_grid=(lh // stride, lw // stride),
            latent_hw=(lh, lw),
            decode_capacity=decode_capacity,
        )

    @property
    def vit_tokens(self) -> int:
        return self.vit_grid[0] * self.vit_grid[1]

    @property
    def latent_tokens(self) -> int:
        return self.latent_grid[0] * self.latent_grid[1]

    @property
    def text_start(self) -> int:
        return self.cameras * (self.vit_tokens + 2)

    @property
    def latent_start(self) -> int:
        """Row of the latent block's <|vision_start|>."""
        return self.text_start + self.text_capacity

    @property
    def prefix_rows(self) -> int:
        return self.latent_start + self.latent_tokens + 2

    @property
    def decode_rows(self) -> int:
        """Key rows of the decode buffer: the prefix plus every token a cycle may decode."""
        return self.prefix_rows + self.decode_capacity


@dataclass(frozen=True)
class PrefixFeed:
    """Host arrays describing one prefix in the layout (inputs of the `prefill` graph)."""

    text_ids: np.ndarray  # [text_capacity] int64, framed segments then padding (id 0)
    segment: np.ndarray  # [prefix_rows] int64, -1 = padding
    causal: np.ndarray  # [prefix_rows] bool, text rows
    positions: np.ndarray  # [prefix_rows] int64 RoPE ids
    next_rope: int  # where the next block (actions, subgoal, decoding) starts
    text_rows: int  # rows of the text region in use

    @property
    def key_valid(self) -> np.ndarray:
        return self.segment >= 0


def assemble(
    layout: PrefixLayout,
    texts: Sequence[Sequence[int]],
    *,
    im_start: int,
    im_end: int,
    latents: bool,
) -> PrefixFeed:
    """Fill the layout with every camera, `texts` (unframed token ids, in order) and, if
    `latents`, the subgoal latent block."""
    p = layout.prefix_rows
    segment = np.full(p, -1, dtype=np.int64)
    causal = np.zeros(p, dtype=bool)
    positions = np.zeros(p, dtype=np.int64)
    rope, seg = 0, 0
    row = 0
    for _ in range(layout.cameras):
        n = layout.vit_tokens + 2
        segment[row : row + n], positions[row : row + n] = seg, rope
        row, rope, seg = row + n, rope + 1, seg + 1
    framed = [[im_start, *ids, im_end] for ids in texts]
    used = sum(len(f) for f in framed)
    if used > layout.text_capacity:
        raise PrefixTooLongError(
            f'prefix text: {used} framed tokens exceed the layout text_capacity '
            f'{layout.text_capacity}'
        )
    text_ids = np.zeros(layout.text_capacity, dtype=np.int64)
    for ids in framed:
        n = len(ids)
        text_ids[row - layout.text_start : row - layout.text_start + n] = ids
        segment[row : row + n], causal[row : row + n] = seg, True
        positions[row : row + n] = np.arange(rope, rope + n)
        row, rope, seg = row + n, rope + n, seg + 1
    if latents:
        start = layout.latent_start
        segment[start:], positions[start:] = seg, rope
        rope += 1
    return PrefixFeed(text_ids, segment, causal, positions, rope, used)
