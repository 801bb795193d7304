"""Shared helpers of the tests/test_model_*.py files (not a test module)."""

import torch

from halo_ros.model.config import load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.layers import RMSNorm


@torch.no_grad()
def random_tiny(seed: int = 0) -> HaloModel:
    """halo-tiny with every tensor random (norms 1 + 0.1 N, others 0.02 N, position tables
    kept), so wrong routing or a swapped norm shows up; heads non-zero unlike a fresh init."""
    torch.set_num_threads(1)
    model = HaloModel(load_config('halo-tiny')).eval()
    gen = torch.Generator().manual_seed(seed)
    norms = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, RMSNorm | torch.nn.LayerNorm | torch.nn.GroupNorm)
    }
    for name, p in model.named_parameters():
        if name.endswith('pos_embed'):
            continue
        noise = torch.randn(p.shape, generator=gen)
        p.copy_(1 + 0.1 * noise if id(p) in norms else 0.02 * noise)
    return model


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random normalised image [3, H, W] in [-1, 1]."""
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()
