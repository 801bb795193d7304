"""Shared helpers of the tests/test_engine_*.py files (not a test module)."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from model_support import random_tiny

from halo_ros.engine.graph_engine import GraphEngine
from halo_ros.engine.graphs import GraphShapes
from halo_ros.engine.interface import Observation
from halo_ros.engine.layout import PrefixLayout
from halo_ros.engine.onnx_export import export_all
from halo_ros.engine.torch_engine import TorchEngine
from halo_ros.model.tokenizer import tokenizer_for

CAMERAS = ('cam_high', 'cam_left_wrist')
IMAGE_HW = (240, 320)
CHUNK = 16


@functools.cache
def tiny():
    return random_tiny()


def shapes() -> GraphShapes:
    layout = PrefixLayout.for_model(
        tiny().cfg, cameras=len(CAMERAS), image_hw=IMAGE_HW, text_capacity=64, decode_capacity=12
    )
    return GraphShapes(layout, CHUNK)


@functools.cache
def exported() -> Path:
    """Every graph of the random tiny model exported once per test process (fp32)."""
    folder = Path(tempfile.mkdtemp(prefix='halo-onnx-'))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    from halo_ros.engine.graphs import CPU_PRECISION

    export_all(
        tiny(),
        shapes(),
        folder,
        model_name='halo-tiny',
        model_hash='tiny-test',
        precision=CPU_PRECISION,
    )
    return folder


def graph_engine(runner) -> GraphEngine:
    model = tiny()
    return GraphEngine(
        runner,
        tokenizer_for(model.cfg),
        model.cfg,
        shapes(),
        model_hash='tiny-test',
        cameras=CAMERAS,
        image_hw=IMAGE_HW,
    )


def eager_engine() -> TorchEngine:
    model = tiny()
    return TorchEngine(
        model,
        tokenizer_for(model.cfg),
        model_name='halo-tiny',
        model_hash='tiny-test',
        cameras=CAMERAS,
        chunk_length=CHUNK,
        image_hw=IMAGE_HW,
    )


def observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8) for c in CAMERAS}
    return Observation(seed, images, np.zeros(14, np.float32))


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 100).standard_normal((CHUNK, 14)).astype(np.float32)
