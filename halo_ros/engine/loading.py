"""Build an engine from a description: model config, weights, backend, chunking.

How the runtime selects a backend: `EngineConfig.backend`
- 'torch': the static graphs as torch modules on `device` (CUDA graphs for the per-step graphs on
  a GPU when `cuda_graphs`); `eager=True` gives the segment-by-segment reference `TorchEngine`.
- 'onnxruntime': the exported graphs in `onnx_dir` (exported there first when it holds no
  manifest; None = a cache folder keyed by model hash and shapes) on the CPU, CUDA
  (`device='cuda'`) or the TensorRT execution provider (`ort_tensorrt=True`).
- 'tensorrt': native TensorRT engines built from those ONNX files into `engine_cache`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime', 'tensorrt', 'remote')
DEFAULT_CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
# What a backend that runs the model in this process imports first, and the extras that bring it.
# A robot install (halo_ros[robot]) has neither: its policy runs with backend remote.
BACKEND_NEEDS = {'torch': ('torch', 'model'), 'onnxruntime': ('onnxruntime', 'model,engine')}


class BackendUnavailable(ImportError):
    """The backend's library is not installed here (e.g. torch on a robot install)."""


def require_backend(backend: str) -> None:
    """Import what `backend` runs on, or raise BackendUnavailable saying what to do instead."""
    if backend not in BACKEND_NEEDS:
        return
    module, extras = BACKEND_NEEDS[backend]
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailable(
            f'backend {backend!r} runs the model on this computer and needs {module}, which this '
            f'install does not have ({error}). Install halo_ros[{extras}] here (`make install` '
            'is the full install), or run the model on a GPU computer with `halo-ros serve` and '
            'use backend remote with server tcp://HOST:PORT (README: Robot computer without a '
            'GPU)'
        ) from error


@dataclass(frozen=True)
class EngineConfig:
    model: str = 'halo-tiny'  # preset under models/ or a YAML path
    checkpoint: str | None = None  # folder with ema.safetensors (+ ae.safetensors); None = random
    backend: str = 'torch'
    device: str = 'cpu'  # 'cpu', 'cuda', 'cuda:N'
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    image_hw: tuple[int, int] = (240, 320)  # what the cameras deliver; resized for the ViT
    chunk_length: int = 50  # HALO real robot: 50 actions at 20 ms
    flow_steps: int = 9  # HALO: linspace(1, 0, 10)
    subgoal_steps: int = 24
    seed: int = 0  # initialisation of random weights (tests, benchmarks)
    # Static graph shapes: rows for the framed prompt + reasoning text, and decoded tokens.
    text_capacity: int = 160
    decode_capacity: int = 64
    # 'auto': fp32 on the CPU; on a GPU bf16 weights and K/V, fp32 flow states and outputs.
    precision: str = 'auto'
    # torch only: the segment-by-segment reference engine. None = eager on the CPU (1.5x faster
    # there than the static graphs, which attend over the whole padded prefix) and static graphs
    # on CUDA (they are what CUDA graphs capture).
    eager: bool | None = None
    cuda_graphs: bool = True  # torch on CUDA: replay the per-step graphs as CUDA graphs
    onnx_dir: str | None = None  # exported graphs (onnxruntime, tensorrt); None = cache folder
    ort_tensorrt: bool = False  # onnxruntime: put the TensorRT execution provider first
    threads: int = 0  # onnxruntime intra-op threads (0 = its default)
    engine_cache: str | None = None  # tensorrt engines; None = ~/.cache/halo_ros/tensorrt
    server: str = 'tcp://127.0.0.1:5555'  # backend remote: the `halo-ros serve` endpoint

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f'backend {self.backend!r} is not one of {BACKENDS}')
        if self.chunk_length < 1 or self.flow_steps < 1 or self.subgoal_steps < 1:
            raise ValueError('chunk_length, flow_steps and subgoal_steps must be positive')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision {self.precision!r} is not one of {PRECISIONS}')
        if self.text_capacity < 8 or self.decode_capacity < 1:
            raise ValueError(
                f'text_capacity {self.text_capacity} must be >= 8 and decode_capacity '
                f'{self.decode_capacity} >= 1'
            )


def resolve_checkpoint(name: str) -> str:
    """'' or 'random' -> '' (random weights); a folder, or a folder name under models/ (e.g.
    'halo-tiny-transfer-cube') -> its absolute path. Raises naming what is missing."""
    from halo_ros.paths import model_file

    if name in ('', 'random'):
        return ''
    for path in (Path(name).expanduser(), model_file(name)):
        if (path / 'ema.safetensors').is_file():
            return str(path.resolve())
    raise FileNotFoundError(
        f'no checkpoint {name!r} (a folder with ema.safetensors, as given or under models/); '
        'train one with `halo-ros train`, or use random weights'
    )


TRAINING_CARD = 'training.yaml'  # written by `halo-ros train` next to the weights


def checkpoint_card(checkpoint: str | None) -> dict:
    """What a trained checkpoint says about how to run it (cameras, thought length, data);
    {} for random weights or a checkpoint without a card (e.g. the released weights)."""
    import yaml

    if not checkpoint or not (Path(checkpoint) / TRAINING_CARD).is_file():
        return {}
    card = yaml.safe_load((Path(checkpoint) / TRAINING_CARD).read_text())
    if not isinstance(card, dict) or card.get('format') != 'halo_ros.checkpoint/1':
        raise ValueError(f'{checkpoint}/{TRAINING_CARD} is not a halo_ros.checkpoint/1 card')
    return card


def model_digest(config: EngineConfig) -> str:
    """sha256 naming the weights: of the checkpoint files, or of (model, seed) when random."""
    from halo_ros.model.checkpoint import EMA_FILE, VAE_FILE
    from halo_ros.model.config import load_config

    if config.checkpoint is None:
        name = load_config(config.model).name
        return hashlib.sha256(f'{name}:random:{config.seed}'.encode()).hexdigest()
    folder = Path(config.checkpoint)
    vae = folder / VAE_FILE
    return file_hash([folder / EMA_FILE] + ([vae] if vae.is_file() else []))


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
        log.warning(
            '%s has random weights (seed %d): actions are meaningless', cfg.name, config.seed
        )
    else:
        folder = Path(config.checkpoint)
        vae = folder / VAE_FILE
        report = load_checkpoint(model, folder / EMA_FILE, vae if vae.is_file() else None)
        log.info('loaded %s: %s', folder, report.summary())
    digest = model_digest(config)
    return model.to(torch.device(config.device)).eval(), tokenizer_for(cfg), digest


def file_hash(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, 'rb') as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def graph_shapes(config: EngineConfig):
    from halo_ros.engine.graphs import GraphShapes
    from halo_ros.engine.layout import PrefixLayout
    from halo_ros.model.config import load_config

    layout = PrefixLayout.for_model(
        load_config(config.model),
        cameras=len(config.cameras),
        image_hw=tuple(config.image_hw),
        text_capacity=config.text_capacity,
        decode_capacity=config.decode_capacity,
    )
    return GraphShapes(layout, config.chunk_length)


def graph_precision(config: EngineConfig):
    """Per-graph precision for this config."""
    from halo_ros.engine.graphs import CPU_PRECISION, GPU_PRECISION, GRAPH_NAMES, Precision

    if config.precision == 'auto':
        return dict(GPU_PRECISION if config.device.startswith('cuda') else CPU_PRECISION)
    return dict.fromkeys(GRAPH_NAMES, Precision(config.precision))


def onnx_folder(config: EngineConfig) -> Path:
    """`config.onnx_dir`, or a cache folder named by model hash, shapes and precision."""
    from halo_ros.engine.graphs import GRAPH_FORMAT

    if config.onnx_dir is not None:
        return Path(config.onnx_dir)
    shapes, precision = graph_shapes(config), graph_precision(config)
    key = json.dumps(
        [GRAPH_FORMAT, repr(shapes), sorted((k, p.value) for k, p in precision.items())],
        sort_keys=True,
    )
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'halo_ros' / 'onnx'
    return root / f'{model_digest(config)[:16]}-{tag}'


def ensure_onnx(config: EngineConfig, *, progress=None) -> Path:
    """The exported graphs for `config`, exporting them first if the folder has none."""
    from halo_ros.engine.onnx_export import MANIFEST, export_all, manifest_shapes, read_manifest

    folder = onnx_folder(config)
    digest = model_digest(config)[:16]
    if (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        if manifest['model_hash'] != digest:
            raise ValueError(
                f'{folder}: exported for model hash {manifest["model_hash"]}, this config has '
                f'{digest}; export again (halo-ros export) or choose another onnx_dir'
            )
        if manifest_shapes(manifest) != graph_shapes(config):
            raise ValueError(
                f'{folder}: exported for {manifest_shapes(manifest)}, this config needs '
                f'{graph_shapes(config)}; export again or choose another onnx_dir'
            )
        return folder
    log.info('exporting ONNX graphs to %s', folder)
    cpu = dataclasses.replace(config, device='cpu')
    model, _, _ = build_model(cpu)
    kwargs = {'progress': progress} if progress else {}
    export_all(
        model,
        graph_shapes(config),
        folder,
        model_name=model.cfg.name,
        model_hash=digest,
        precision=graph_precision(config),
        **kwargs,
    )
    return folder


def load_engine(config: EngineConfig):
    """The engine for `config.backend`, in raw action units whatever the checkpoint trained on."""
    if config.backend == 'remote':  # the model runs in `halo-ros serve`; no torch on this side
        from halo_ros.transport.client import remote_engine

        return remote_engine(config)
    from halo_ros.model.action_norm import ActionNorm

    engine = _local_engine(config)
    norm = ActionNorm.from_card(checkpoint_card(config.checkpoint))
    if norm is None:
        return engine
    from halo_ros.engine.normalized import NormalizedEngine

    return NormalizedEngine(engine, norm)


def _local_engine(config: EngineConfig):
    require_backend(config.backend)
    from halo_ros.engine.graph_engine import GraphEngine
    from halo_ros.model.config import load_config
    from halo_ros.model.tokenizer import tokenizer_for

    eager = config.eager if config.eager is not None else not config.device.startswith('cuda')
    if config.backend == 'torch' and eager:
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
    shapes = graph_shapes(config)
    if config.backend == 'torch':
        from halo_ros.engine.runner import TorchRunner

        model, tokenizer, digest = build_model(config)
        runner = TorchRunner(
            model, shapes, precision=graph_precision(config), cuda_graphs=config.cuda_graphs
        )
        cfg = model.cfg
    elif config.backend == 'onnxruntime':
        from halo_ros.engine.ort_runner import OrtRunner

        cfg = load_config(config.model)
        tokenizer, digest = tokenizer_for(cfg), model_digest(config)
        runner = OrtRunner(
            ensure_onnx(config),
            device=config.device,
            tensorrt_provider=config.ort_tensorrt,
            threads=config.threads,
            cache_dir=Path(config.engine_cache) if config.engine_cache else None,
        )
    else:
        from halo_ros.engine.trt_runner import TrtRunner

        cfg = load_config(config.model)
        tokenizer, digest = tokenizer_for(cfg), model_digest(config)
        runner = TrtRunner.from_onnx(
            ensure_onnx(config),
            device=config.device,
            cache_dir=Path(config.engine_cache) if config.engine_cache else None,
        )
    return GraphEngine(
        runner,
        tokenizer,
        cfg,
        shapes,
        model_hash=digest[:16],
        cameras=tuple(config.cameras),
        image_hw=tuple(config.image_hw),
        flow_steps=config.flow_steps,
        subgoal_steps=config.subgoal_steps,
    )
