"""The autoencoder stage: fit halo-tiny's VAE on camera frames, then encode the subgoal images.

halo-tiny's VAE has no released weights, so a subgoal image would be noise. It is fitted first
(L1 reconstruction + a small KL) on random crops of the goal camera's frames at the VAE's input
scale: the network is convolutional, and 64 px crops cost ~1/12 of a full 192x256 frame on a
CPU. The KL is taken on the *scaled* latent (`scale * (z - shift)`, what the LLM sees), so the
flow-matching targets stay O(1) with the config's FLUX scale and shift. Then the VAE is frozen
and each subtask's goal frame is encoded once, exactly as `encode_image_latents` does
(posterior mean, scaled, 2x2-patched).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from halo_ros.model.halo import HaloModel
from halo_ros.model.inference import encode_image_latents
from halo_ros.model.preprocess import vae_image

logger = logging.getLogger(__name__)


def vae_input(model: HaloModel, rgb: np.ndarray) -> Tensor:
    """A frame resized as every engine resizes it for the subgoal ([3, H, W] in [-1, 1])."""
    return vae_image(model.cfg, rgb)


def fit_autoencoder(
    model: HaloModel,
    frames: Callable[[int], list[np.ndarray]],
    *,
    steps: int,
    seconds: float,
    batch: int = 8,
    crop: int = 64,
    lr: float = 1e-3,
    kl_weight: float = 1e-3,
    seed: int = 0,
    log_every: int = 20,
) -> dict[str, float]:
    """Train model.vae in place for `steps` steps or `seconds`, whichever ends first.

    frames(n) -> n RGB frames. Returns the final losses and the scaled-latent statistics.
    """
    vae = model.vae
    for module in vae.modules():  # conv nets need fan-in init, not the LLM's N(0, 0.02)
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    device = next(vae.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    cfg = vae.cfg
    start, step, recon, kl = time.monotonic(), 0, float('nan'), float('nan')
    while step < steps and time.monotonic() - start < seconds:
        crops = []
        for rgb in frames(batch):
            x = vae_input(model, rgb)
            c = min(crop, x.shape[1], x.shape[2]) // 8 * 8
            i = int(torch.randint(x.shape[1] - c + 1, (), generator=gen))
            j = int(torch.randint(x.shape[2] - c + 1, (), generator=gen))
            crops.append(x[:, i : i + c, j : j + c])
        x = torch.stack(crops).to(device)
        mean, logvar = vae.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-20, 10)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen).to(device)
        out = vae.decoder(z)
        rec = (out - x).abs().mean()
        mean_s, var_s = (
            cfg.scale_factor * (mean - cfg.shift_factor),
            cfg.scale_factor**2 * logvar.exp(),
        )
        kld = 0.5 * (mean_s**2 + var_s - 1 - var_s.log()).mean()
        loss = rec + kl_weight * kld
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        recon, kl = float(rec.detach()), float(kld.detach())
        if step % log_every == 0 or step == 1:
            logger.info(
                'autoencoder step %d: L1 %.4f  KL %.3f  (%.1f s)',
                step,
                recon,
                kl,
                time.monotonic() - start,
            )
    vae.eval().requires_grad_(False)
    return {'steps': step, 'l1': recon, 'kl': kl, 'seconds': round(time.monotonic() - start, 1)}


@torch.no_grad()
def goal_latents(
    model: HaloModel, goals: dict, divisor: float
) -> tuple[dict, tuple[int, int], dict[str, float]]:
    """Encode each goal frame -> ({key: tokens [h*w, 64]}, grid, latent statistics)."""
    device = next(model.parameters()).device
    tokens, grid = {}, None
    for key, rgb in goals.items():
        x, grid_k = encode_image_latents(model, vae_input(model, rgb).to(device))
        if grid is not None and grid_k != grid:
            raise ValueError(f'goal frames of different sizes: latent grids {grid} and {grid_k}')
        tokens[key], grid = x.float().cpu(), grid_k
    everything = torch.cat(list(tokens.values()))
    stats = {'latent_mean': float(everything.mean()), 'latent_std': float(everything.std())}
    logger.info(
        '%d goal latents on a %s grid: mean %.3f std %.3f (the flow target is them x %.1f)',
        len(tokens),
        grid,
        stats['latent_mean'],
        stats['latent_std'],
        divisor,
    )
    return tokens, grid, stats
