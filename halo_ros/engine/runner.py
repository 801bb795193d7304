"""What a backend must do: run one named graph on a dict of tensors (the GPU-runner seam).

`GraphEngine` (the pipeline) is written once against this; backends differ only in their runner:
`TorchRunner` here (eager modules, CUDA graphs for the per-step graphs on a GPU),
`OrtRunner` (onnxruntime) and `TrtRunner` (native TensorRT).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from halo_ros.engine.graphs import (
    CPU_PRECISION,
    GPU_PRECISION,
    GRAPH_NAMES,
    GRAPHS,
    RTC_GRAPH,
    GraphShapes,
    Precision,
    build_graph,
    cast_model,
    dtype_name,
    example_inputs,
    graph_precision_key,
)
from halo_ros.engine.interface import EngineInputError
from halo_ros.model.halo import HaloModel

log = logging.getLogger(__name__)


class GraphRunner(ABC):
    """Runs the graphs of `halo_ros.engine.graphs` by name. Must be thread-safe: the fast and
    the slow loop call it concurrently (they share `vit` and `prefill`)."""

    backend: str
    device: torch.device  # where feeds must live and outputs come back

    @abstractmethod
    def run(self, graph: str, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        """Inputs by name -> outputs by name (see the graph table)."""

    @property
    def supports_gradients(self) -> bool:
        """Whether the `action_step_rtc` graph (guided RTC) can run."""
        return False

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Free sessions and device buffers."""


def check_feeds(graph: str, spec: dict, feeds: dict[str, Tensor]) -> None:
    """Raise EngineInputError naming `graph.input` unless feeds match the manifest entry."""
    for expected in spec['inputs']:
        _check_feed(graph, expected, feeds.get(expected['name']))


def _check_feed(graph: str, expected: dict, tensor: Tensor | None) -> None:
    name = expected['name']
    if tensor is None:
        raise EngineInputError(f'{graph}.{name}: missing input')
    if list(tensor.shape) != expected['shape']:
        raise EngineInputError(
            f'{graph}.{name}: expected shape {tuple(expected["shape"])}, got {tuple(tensor.shape)}'
        )
    dtype = dtype_name(tensor.dtype)
    if dtype != expected['dtype']:
        raise EngineInputError(f'{graph}.{name}: expected dtype {expected["dtype"]}, got {dtype}')


def default_precision(device: torch.device) -> dict[str, Precision]:
    return dict(GPU_PRECISION if device.type == 'cuda' else CPU_PRECISION)


class CudaGraphStep:
    """One graph captured for fixed shapes; replay copies the inputs into its static buffers.

    Capture follows the CUDA-graph rules (anchors-model-trt.md §4.2): warm up on a side stream,
    capture on a non-default stream, stable input/output addresses, no host syncs inside.
    """

    def __init__(self, module: torch.nn.Module, example: dict[str, Tensor], warmup: int = 3):
        self._inputs = {name: t.clone() for name, t in example.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):
                module(**self._inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        # thread_local: the other loop's kernels on other streams do not invalidate the capture
        with torch.no_grad(), torch.cuda.graph(self._graph, capture_error_mode='thread_local'):
            out = module(**self._inputs)
        self._outputs = out if isinstance(out, tuple) else (out,)

    def __call__(self, feeds: dict[str, Tensor]) -> tuple[Tensor, ...]:
        for name, tensor in feeds.items():
            self._inputs[name].copy_(tensor, non_blocking=True)
        self._graph.replay()
        return tuple(o.clone() for o in self._outputs)  # the next replay overwrites them


# Per-step graphs worth capturing: they run many times per call with identical shapes.
CAPTURED = ('action_step', 'decode_step', 'subgoal_step')


class TorchRunner(GraphRunner):
    """The graphs as eager torch modules; on CUDA the per-step graphs replay as CUDA graphs."""

    backend = 'torch'

    def __init__(
        self,
        model: HaloModel,
        shapes: GraphShapes,
        *,
        precision: dict[str, Precision] | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        self.device = next(model.parameters()).device
        precision = precision or default_precision(self.device)
        copies: dict[torch.dtype, HaloModel] = {model.dtype: model}
        self._graphs = {}
        for name in (*GRAPH_NAMES, RTC_GRAPH):
            dtype = precision[graph_precision_key(name)].dtype
            if dtype not in copies:
                copies[dtype] = cast_model(model, dtype)
            self._graphs[name] = build_graph(name, copies[dtype], shapes)
        self._capture = cuda_graphs and self.device.type == 'cuda'
        self._captured: dict[str, CudaGraphStep] = {}
        self._specs: dict[str, dict] = {}
        self._locks = {name: threading.Lock() for name in CAPTURED}
        if self._capture:  # at startup, before two loops share the GPU
            for name in CAPTURED:
                graph_model = copies[precision[name].dtype]
                example = example_inputs(name, graph_model, shapes, device=self.device)
                log.info('capturing %s as a CUDA graph', name)
                self._captured[name] = CudaGraphStep(self._graphs[name], example)
                # copy_ into the static buffers would broadcast a wrong shape silently
                self._specs[name] = {
                    'inputs': [
                        {'name': n, 'shape': list(t.shape), 'dtype': dtype_name(t.dtype)}
                        for n, t in example.items()
                    ]
                }

    @property
    def supports_gradients(self) -> bool:
        return True

    def run(self, graph: str, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        names = GRAPHS[graph][2]
        with torch.no_grad():
            if self._capture and graph in CAPTURED:
                check_feeds(graph, self._specs[graph], feeds)
                with self._locks[graph]:  # one replay at a time through the static buffers
                    out = self._captured[graph](feeds)
            else:
                out = self._graphs[graph](**feeds)
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(names, out, strict=True))
