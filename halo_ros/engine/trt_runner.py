"""Native TensorRT backend: engines built from the exported ONNX, cached, buffers bound once.

Build (TensorRT 10.x / 11.x Python API): a *strongly typed* network parsed from each graph's
ONNX, so precision is the ONNX tensor types (bf16 weights and K/V, fp32 flow states and
outputs; TRT 11 has no FP16/INT8 builder flags any more, anchors-model-trt.md §4.2), and one
optimization profile per engine with min = opt = max = the manifest shape (every graph is
static, which is what lets the runtime replay them). Engines are cached under a key of the
ONNX file, the model hash, the GPU name and the TensorRT version: a new driver-independent
TensorRT, another GPU or new weights rebuild, nothing else does.

Run: one execution context per graph, its input and output tensors allocated once as torch CUDA
tensors and bound by address (`set_tensor_address`), then `execute_async_v3` on a private stream.

tensorrt cannot be installed on the CI machines (no wheels reachable, feasibility.md); it is
imported lazily and its absence is a clear error, never a silent fallback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from halo_ros.engine.graphs import RTC_GRAPH
from halo_ros.engine.onnx_export import read_manifest
from halo_ros.engine.runner import GraphRunner, check_feeds

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 8 << 30


class TensorRTUnavailableError(RuntimeError):
    """tensorrt or a CUDA device is missing."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(
            'the tensorrt backend needs the TensorRT Python package (10.x or 11.x, from NVIDIA; '
            'pip install tensorrt on a machine that reaches pypi.nvidia.com) and a CUDA GPU; '
            'tensorrt is not installed here. Use backend onnxruntime or torch instead.'
        ) from e
    return trt


def require_cuda(device: str) -> torch.device:
    if not device.startswith('cuda'):
        raise TensorRTUnavailableError(
            f'the tensorrt backend runs on a CUDA device, not {device!r}'
        )
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            f'the tensorrt backend needs CUDA, but torch {torch.__version__} sees no CUDA device'
        )
    return torch.device(device)


def engine_cache_key(
    onnx_sha256: str, model_hash: str, gpu_name: str, tensorrt_version: str
) -> str:
    """Name of a cached engine: changes with the graph, the weights, the GPU or TensorRT."""
    key = json.dumps([onnx_sha256, model_hash, gpu_name, tensorrt_version])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    root = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return root / 'halo_ros' / 'tensorrt'


def build_engine(onnx_path: Path, shapes: dict[str, list[int]], *, workspace_bytes: int) -> bytes:
    """Parse one ONNX graph into a strongly typed network and build a serialized engine."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Required on 10.x; on 11.x every network is strongly typed and the flag is ignored.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED', None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f'{onnx_path}: TensorRT cannot parse it: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(shapes[tensor.name])
        if tensor.is_shape_tensor:
            raise RuntimeError(f'{onnx_path}: input {tensor.name} is a shape tensor (unexpected)')
        profile.set_shape(tensor.name, shape, shape, shape)  # static: min = opt = max
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'{onnx_path}: TensorRT engine build failed (see the log above)')
    return bytes(serialized)


def build_engines(
    folder: Path,
    *,
    device: str = 'cuda',
    cache_dir: Path | None = None,
    graphs: Iterable[str] | None = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> dict[str, Path]:
    """Engines for the exported graphs in `folder` (built, or found in the cache) -> paths."""
    trt = import_tensorrt()
    torch_device = require_cuda(device)
    manifest = read_manifest(folder)
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(torch_device)
    chosen = list(graphs or manifest['graphs'])
    paths = {}
    for name in progress(chosen):
        entry = manifest['graphs'][name]
        key = engine_cache_key(entry['sha256'], manifest['model_hash'], gpu, trt.__version__)
        path = cache_dir / f'{name}-{key}.engine'
        if path.is_file():
            log.info('%s: cached engine %s', name, path)
        else:
            log.info(
                '%s: building a TensorRT engine on %s (TensorRT %s)', name, gpu, trt.__version__
            )
            shapes = {i['name']: i['shape'] for i in entry['inputs']}
            data = build_engine(folder / entry['file'], shapes, workspace_bytes=workspace_bytes)
            tmp = path.with_suffix('.tmp')
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a crashed build never leaves a half engine in the cache
        paths[name] = path
    return paths


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
        trt.DataType.INT8: torch.int8,
    }
    return table[dtype]


class _BoundEngine:
    """One engine, one context, every I/O tensor allocated once and bound by address."""

    def __init__(self, trt, runtime, path: Path, device: torch.device) -> None:
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f'{path}: TensorRT could not deserialize the engine (rebuild it)')
        self.context = self.engine.create_execution_context()
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            buffer = torch.empty(shape, dtype=dtype, device=device)
            self.context.set_tensor_address(name, buffer.data_ptr())
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[name] = buffer
        self.lock = threading.Lock()


class TrtRunner(GraphRunner):
    backend = 'tensorrt'

    def __init__(self, engines: dict[str, Path], manifest: dict, *, device: str = 'cuda') -> None:
        trt = import_tensorrt()
        self._specs = manifest['graphs']
        self.device = require_cuda(device)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with torch.cuda.device(self.device):
            self._stream = torch.cuda.Stream()
            self._engines = {
                name: _BoundEngine(trt, self._runtime, path, self.device)
                for name, path in engines.items()
            }

    @classmethod
    def from_onnx(
        cls, folder: Path, *, device: str = 'cuda', cache_dir: Path | None = None
    ) -> TrtRunner:
        engines = build_engines(folder, device=device, cache_dir=cache_dir)
        return cls(engines, read_manifest(folder), device=device)

    @property
    def supports_gradients(self) -> bool:
        return RTC_GRAPH in self._engines

    def run(self, graph: str, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        check_feeds(graph, self._specs[graph], feeds)
        bound = self._engines[graph]
        with bound.lock, torch.cuda.stream(self._stream):
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            for name, buffer in bound.inputs.items():
                buffer.copy_(feeds[name], non_blocking=True)
            if not bound.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f'{graph}: TensorRT execute_async_v3 failed')
            outputs = {name: buffer.clone() for name, buffer in bound.outputs.items()}
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        return outputs

    def close(self) -> None:
        self._engines.clear()
