"""ONNX Runtime backend: one session per exported graph (CPU, CUDA or TensorRT provider).

Guided RTC runs the exported `action_step_rtc` graph (the velocity and its vector-Jacobian
product in one call), the same arithmetic as the torch backend's `RtcGuidance`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from halo_ros.engine.graphs import RTC_GRAPH
from halo_ros.engine.onnx_export import read_manifest
from halo_ros.engine.runner import GraphRunner, check_feeds

log = logging.getLogger(__name__)

CPU = 'CPUExecutionProvider'
CUDA = 'CUDAExecutionProvider'
TENSORRT = 'TensorrtExecutionProvider'


def providers_for(device: str, *, tensorrt: bool, cache_dir: Path | None) -> list:
    """Execution providers in priority order for a device ('cpu', 'cuda', 'cuda:1')."""
    if device == 'cpu':
        return [CPU]
    if not device.startswith('cuda'):
        raise ValueError(f'onnxruntime device {device!r} is not cpu or cuda[:N]')
    index = int(device.split(':')[1]) if ':' in device else 0
    chain: list = []
    if tensorrt:
        # No fp16/bf16 enable flags: precision is in the exported graph's types (strong typing;
        # TensorRT 11 removed those builder flags).
        options = {'device_id': index}
        if cache_dir is not None:
            options |= {'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(cache_dir)}
        chain.append((TENSORRT, options))
    return [*chain, (CUDA, {'device_id': index}), CPU]


class OrtRunner(GraphRunner):
    backend = 'onnxruntime'

    def __init__(
        self,
        folder: Path,
        *,
        device: str = 'cpu',
        tensorrt_provider: bool = False,
        threads: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.device = torch.device(device)
        providers = providers_for(device, tensorrt=tensorrt_provider, cache_dir=cache_dir)
        available = ort.get_available_providers()
        for provider in providers:
            name = provider[0] if isinstance(provider, tuple) else provider
            if name not in available:
                raise RuntimeError(
                    f'onnxruntime has no {name} on this machine (available: {available}); '
                    'install onnxruntime-gpu with CUDA for device cuda'
                )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            # A thread budget means a shared CPU (the robot's nodes beside the policy): idle
            # threads sleep instead of spinning, which would take cores from the others.
            options.intra_op_num_threads = threads
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self._sessions = {}
        self._specs = {}
        for name, entry in self.manifest['graphs'].items():
            path = self.folder / entry['file']
            self._sessions[name] = ort.InferenceSession(str(path), options, providers=providers)
            self._specs[name] = entry
        log.info('onnxruntime sessions %s on %s', sorted(self._sessions), providers)

    @property
    def supports_gradients(self) -> bool:
        return RTC_GRAPH in self._sessions

    def run(self, graph: str, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        spec = self._specs[graph]
        check_feeds(graph, spec, feeds)
        session = self._sessions[graph]
        if self.device.type == 'cpu':
            arrays = {n: t.detach().numpy() for n, t in feeds.items()}
            outputs = session.run(None, arrays)
            return {
                o['name']: torch.from_numpy(a)
                for o, a in zip(spec['outputs'], outputs, strict=True)
            }
        return self._run_bound(session, spec, feeds)

    def _run_bound(self, session, spec: dict, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        """GPU: bind torch tensors by address (no host copies), outputs preallocated."""
        binding = session.io_binding()
        index = self.device.index or 0
        for name, tensor in feeds.items():
            tensor = tensor.contiguous()
            binding.bind_input(
                name, 'cuda', index, _np_type(tensor.dtype), list(tensor.shape), tensor.data_ptr()
            )
        outputs = {}
        for o in spec['outputs']:
            out = torch.empty(o['shape'], dtype=getattr(torch, o['dtype']), device=self.device)
            binding.bind_output(
                o['name'], 'cuda', index, _np_type(out.dtype), list(out.shape), out.data_ptr()
            )
            outputs[o['name']] = out
        torch.cuda.current_stream(self.device).synchronize()  # inputs written before ORT reads
        session.run_with_iobinding(binding)
        return outputs

    def close(self) -> None:
        self._sessions.clear()


def _np_type(dtype: torch.dtype):
    if dtype == torch.bfloat16:
        import ml_dtypes  # ships with onnx; numpy itself has no bfloat16

        return ml_dtypes.bfloat16
    return torch.empty((), dtype=dtype).numpy().dtype.type
