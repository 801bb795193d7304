"""Build an engine from a description: model config, weights, backend, chunking."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime', 'tensorrt', 'remote')
DEFAULT_CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')


@dataclass(frozen=True)
class EngineConfig:
    model: str = 'halo-tiny'  # preset under models/ or a YAML path
    checkpoint: str | None = None  # folder with ema.safetensors (+ ae.safetensors); None = random
    backend: str = 'torch'
    device: str = 'cpu'
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    image_hw: tuple[int, int] = (240, 320)  # what the cameras deliver; resized for the ViT
    chunk_length: int = 50  # HALO real robot: 50 actions at 20 ms
    flow_steps: int = 9  # HALO: linspace(1, 0, 10)
    subgoal_steps: int = 24
    seed: int = 0  # initialisation of random weights (tests, benchmarks)
    server: str = 'tcp://127.0.0.1:5555'  # backend remote: the `halo-ros serve` endpoint

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f'backend {self.backend!r} is not one of {BACKENDS}')
        if self.chunk_length < 1 or self.flow_steps < 1 or self.subgoal_steps < 1:
            raise ValueError('chunk_length, flow_steps and subgoal_steps must be positive')


def build_model(config: EngineConfig):
    """(model, tokenizer, model_hash) on the configured device."""
    import torch

    from halo_ros.model.checkpoint import EMA_FILE, VAE_FILE, load_checkpoint
    from halo_ros.model.config import load_config
    from halo_ros.model.halo import HaloModel
    from halo_ros.model.tokenizer import tokenizer_for

    cfg = load_config(config.model)
    model = HaloModel(cfg)
    if config.checkpoint is None:
        model.init_weights(seed=config.seed)
        digest = hashlib.sha256(f'{cfg.name}:random:{config.seed}'.encode()).hexdigest()
        log.warning(
            '%s has random weights (seed %d): actions are meaningless', cfg.name, config.seed
        )
    else:
        folder = Path(config.checkpoint)
        vae = folder / VAE_FILE
        report = load_checkpoint(model, folder / EMA_FILE, vae if vae.is_file() else None)
        log.info('loaded %s: %s', folder, report)
        digest = file_hash([folder / EMA_FILE] + ([vae] if vae.is_file() else []))
    return model.to(torch.device(config.device)).eval(), tokenizer_for(cfg), digest


def file_hash(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, 'rb') as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def load_engine(config: EngineConfig):
    """The engine for `config.backend`."""
    if config.backend == 'torch':
        from halo_ros.engine.torch_engine import TorchEngine

        model, tokenizer, digest = build_model(config)
        return TorchEngine(
            model,
            tokenizer,
            model_name=model.cfg.name,
            model_hash=digest[:16],
            cameras=config.cameras,
            chunk_length=config.chunk_length,
            flow_steps=config.flow_steps,
            subgoal_steps=config.subgoal_steps,
            image_hw=config.image_hw,
        )
    if config.backend == 'remote':  # the model runs in `halo-ros serve`; see halo_ros.transport
        from halo_ros.transport.client import remote_engine

        return remote_engine(config)
    raise NotImplementedError(f'the {config.backend} backend is not implemented yet')
