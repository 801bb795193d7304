"""Image preprocessing as the release does it (`data/transforms.py:ImageTransform`).

Resize (PIL bicubic) so the long side is <= max_px and the short side >= min_px, both multiples
of the stride (14 for the ViT, 16 for the VAE), capped at max_pixels; then [0, 255] -> [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MAX_PIXELS = 14 * 14 * 9 * 1024  # released ImageTransform default


def _fit(width: int, height: int, scale: float, stride: int) -> tuple[int, int]:
    def snap(v: float) -> int:
        return max(stride, int(round(v / stride) * stride))

    return snap(round(width * scale)), snap(round(height * scale))


def target_size(
    height: int, width: int, max_px: int, min_px: int, stride: int, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """-> (height, width) after the released MaxLongEdgeMinShortEdgeResize."""
    scale = min(max_px / max(width, height), 1.0)
    scale = max(scale, min_px / min(width, height))
    w, h = _fit(width, height, scale, stride)
    if w * h > max_pixels:
        w, h = _fit(w, h, max_pixels / (w * h), stride)
    if max(w, h) > max_px:
        w, h = _fit(w, h, max_px / max(w, h), stride)
    return h, w


def vae_size(cfg, height: int, width: int) -> tuple[int, int]:
    """(height, width) a frame is resized to for the VAE (the subgoal image, goal images in
    training): the release's ImageTransform(vae max, vae min, 16), 16 = `cfg.latent_downsample`
    image pixels per latent token. Every engine and the trainer size goals with this."""
    vae = cfg.vae
    return target_size(height, width, vae.image_max_px, vae.image_min_px, cfg.latent_downsample)


def _frame_hw(rgb: np.ndarray) -> tuple[int, int]:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected a uint8 [H, W, 3] frame, got {rgb.dtype} {rgb.shape}')
    return rgb.shape[0], rgb.shape[1]


def resize_image(rgb: np.ndarray, max_px: int, min_px: int, stride: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H', W', 3] (PIL bicubic; unchanged if already that size)."""
    return resize_to(rgb, *target_size(*_frame_hw(rgb), max_px, min_px, stride))


def resize_to(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3] (PIL bicubic; unchanged if already that size)."""
    if (h, w) == rgb.shape[:2]:
        return rgb
    from PIL import Image  # only needed when resizing (the release resizes with PIL)

    return np.array(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))  # writable for torch


def to_tensor(rgb: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [-1, 1] (mean = std = 0.5)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    return (x - 0.5) / 0.5


def vit_image(rgb: np.ndarray, vit_max_px: int, vit_min_px: int, patch: int) -> Tensor:
    return to_tensor(resize_image(rgb, vit_max_px, vit_min_px, patch))


def vae_image(cfg, rgb: np.ndarray) -> Tensor:
    """A frame as the VAE takes it (`vae_size`), [3, H, W] in [-1, 1]."""
    return to_tensor(resize_to(rgb, *vae_size(cfg, *_frame_hw(rgb))))


def display_image(image) -> np.ndarray:
    """A decoded image tensor [3, H, W] in [-1, 1] -> (H, W, 3) uint8 for display."""
    image = ((image.float().permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
    return image.byte().cpu().numpy()
