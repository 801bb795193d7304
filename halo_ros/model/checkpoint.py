"""Checkpoint IO in the released layout: `ema.safetensors` (Bagel keys) + `ae.safetensors` (VAE).

Names are exactly the released state-dict keys; no remapping. Loading is strict by default and
reports missing, unexpected and mis-shaped names (the release's accelerate loader silently keeps
missing keys and skips unknown ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from halo_ros.model.halo import HaloModel

logger = logging.getLogger(__name__)

VAE_PREFIX = 'vae.'
EMA_FILE = 'ema.safetensors'
VAE_FILE = 'ae.safetensors'


class CheckpointError(ValueError):
    pass


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, in no file
    unexpected: list[str] = field(default_factory=list)  # in a file, not in the model
    mismatched: list[str] = field(default_factory=list)  # 'name: file shape vs model shape'

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        parts = [f'{len(self.loaded)} loaded']
        for label, names in (
            ('missing', self.missing),
            ('unexpected', self.unexpected),
            ('mis-shaped', self.mismatched),
        ):
            if names:
                shown = ', '.join(names[:limit]) + (' ...' if len(names) > limit else '')
                parts.append(f'{len(names)} {label}: {shown}')
        return '; '.join(parts)


def split_state_dict(model: HaloModel) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """-> (Bagel tensors, VAE tensors without the `vae.` prefix), as the release stores them."""
    bagel, vae = {}, {}
    for name, tensor in model.state_dict().items():
        if name.startswith(VAE_PREFIX):
            vae[name[len(VAE_PREFIX) :]] = tensor
        else:
            bagel[name] = tensor
    return bagel, vae


def save_checkpoint(
    model: HaloModel,
    directory: str | Path,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    vae_dtype: torch.dtype | None = torch.float32,
) -> tuple[Path, Path]:
    """Write `ema.safetensors` and `ae.safetensors`; a None dtype keeps the model's."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bagel, vae = split_state_dict(model)

    def prepared(tensors: dict[str, Tensor], dt: torch.dtype | None) -> dict[str, Tensor]:
        return {
            k: (v if dt is None else v.to(dt)).detach().contiguous().cpu()
            for k, v in tensors.items()
        }

    ema_path, vae_path = directory / EMA_FILE, directory / VAE_FILE
    save_file(prepared(bagel, dtype), str(ema_path))
    save_file(prepared(vae, vae_dtype), str(vae_path))
    logger.info('saved %d + %d tensors to %s', len(bagel), len(vae), directory)
    return ema_path, vae_path


def _read(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    with safe_open(str(path), framework='pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def load_checkpoint(
    model: HaloModel,
    ema_paths: str | Path | Sequence[str | Path],
    vae_path: str | Path | None = None,
    *,
    strict: bool = True,
) -> LoadReport:
    """Load Bagel tensors from one or more files (later files override earlier ones, like the
    release's pretrain-then-finetune loading) and optionally the VAE file.

    Strict: every model tensor (the VAE's only if `vae_path` is given) must come from a file,
    every file tensor must exist in the model with the same shape; otherwise CheckpointError
    naming them. Values are cast to the model's dtype.
    """
    paths = [ema_paths] if isinstance(ema_paths, str | Path) else list(ema_paths)
    incoming: dict[str, Tensor] = {}
    for p in paths:
        incoming.update(_read(Path(p)))
    if vae_path is not None:
        incoming.update({VAE_PREFIX + k: v for k, v in _read(Path(vae_path)).items()})

    own = model.state_dict()
    report = LoadReport()
    expected = {k for k in own if vae_path is not None or not k.startswith(VAE_PREFIX)}
    report.missing = sorted(expected - set(incoming))
    report.unexpected = sorted(set(incoming) - set(own))
    for name in sorted(set(incoming) & set(own)):
        if tuple(incoming[name].shape) != tuple(own[name].shape):
            report.mismatched.append(
                f'{name}: file {tuple(incoming[name].shape)} vs model {tuple(own[name].shape)}'
            )
    if strict and not report.ok:
        raise CheckpointError(
            f'checkpoint {", ".join(map(str, paths))} does not fit '
            f'{model.cfg.name}: {report.summary()}'
        )
    bad = {m.split(':')[0] for m in report.mismatched}
    with torch.no_grad():
        for name in sorted(set(incoming) & set(own) - bad):
            own[name].copy_(incoming[name].to(own[name].dtype))
            report.loaded.append(name)
    logger.info('load_checkpoint: %s', report.summary())
    return report
