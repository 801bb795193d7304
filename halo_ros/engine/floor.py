"""The physical floor of each graph on a device: max(bytes that must move / bandwidth,
FLOPs / peak matmul rate) (DESIGN.md, "Floor"); measured / floor is the efficiency we track.

FLOPs are counted by running the graph as built (padded rows included) on the meta device under
`torch.utils.flop_counter` (matmuls and attention), so they follow the code, not a formula.
Bytes are the weights of every module the graph calls (read once; table lookups count only the
rows they gather) plus the graph's inputs and outputs (K/V read by a step, written by prefill).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from halo_ros.engine.graphs import GRAPH_NAMES, GraphShapes, Precision, build_graph, example_inputs
from halo_ros.model.config import HaloConfig
from halo_ros.model.embed import PositionEmbedding
from halo_ros.model.halo import HaloModel


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    bandwidth_gb_s: float  # memory bandwidth
    peak_tflops: dict[Precision, float]  # dense matmul peak per weight precision
    source: str


# Datasheet figures (dense, no sparsity; fp32 graphs at the TF32 tensor-core rate that TensorRT
# and cuBLAS use by default); not measured here.
H100_SXM = DeviceSpec(
    'h100-sxm',
    3350.0,
    {Precision.BF16: 989.4, Precision.FP16: 989.4, Precision.FP32: 494.7},
    'NVIDIA H100 Tensor Core GPU datasheet: SXM5 3.35 TB/s HBM3, 989.4 TFLOPS bf16/fp16 dense, '
    '494.7 TFLOPS tf32 dense (fp32 graphs)',
)
H100_PCIE = DeviceSpec(
    'h100-pcie',
    2000.0,
    {Precision.BF16: 756.0, Precision.FP16: 756.0, Precision.FP32: 378.0},
    'NVIDIA H100 Tensor Core GPU datasheet: PCIe 2.0 TB/s HBM2e, 756 TFLOPS bf16 dense, '
    '378 TFLOPS tf32 dense (fp32 graphs)',
)
H200 = DeviceSpec(
    'h200',
    4800.0,
    {Precision.BF16: 989.4, Precision.FP16: 989.4, Precision.FP32: 494.7},
    'NVIDIA H200 Tensor Core GPU datasheet: SXM 4.8 TB/s HBM3e, 989 TFLOPS bf16 dense, '
    '494.7 TFLOPS tf32 dense (fp32 graphs)',
)
DATASHEETS = {d.name: d for d in (H100_SXM, H100_PCIE, H200)}


def probe_cpu(seconds: float = 0.3) -> DeviceSpec:
    """This CPU, measured now with torch's current thread count: fp32 matmul rate (512^3 mm)
    and copy bandwidth (64 MiB). Under load the probe is slow too, so ratios stay comparable."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    src, dst = torch.empty(16 << 20), torch.empty(16 << 20)

    def rate(fn, work: float) -> float:
        fn()
        best, deadline = float('inf'), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return work / best

    flops = rate(lambda: torch.mm(a, b), 2 * 512**3)
    bandwidth = rate(lambda: dst.copy_(src), 2 * src.numel() * 4)
    return DeviceSpec(
        'cpu',
        bandwidth / 1e9,
        dict.fromkeys(Precision, flops / 1e12),
        f'measured: {torch.get_num_threads()} thread(s), 512^3 fp32 mm, 64 MiB copy',
    )


@dataclass(frozen=True)
class GraphCost:
    graph: str
    flops: float
    bytes: float
    precision: Precision

    def floor_ms(self, device: DeviceSpec) -> float:
        return 1e3 * max(self.memory_s(device), self.compute_s(device))

    def memory_s(self, device: DeviceSpec) -> float:
        return self.bytes / (device.bandwidth_gb_s * 1e9)

    def compute_s(self, device: DeviceSpec) -> float:
        return self.flops / (device.peak_tflops[self.precision] * 1e12)

    def bound(self, device: DeviceSpec) -> str:
        return 'memory' if self.memory_s(device) >= self.compute_s(device) else 'compute'


def graph_costs(
    cfg: HaloConfig, shapes: GraphShapes, precision: dict[str, Precision]
) -> dict[str, GraphCost]:
    """FLOPs and bytes of every graph for this config, without allocating any weights."""
    from torch.utils.flop_counter import FlopCounterMode

    costs = {}
    for name in GRAPH_NAMES:
        prec = precision[name]
        with torch.device('meta'):
            model = HaloModel(cfg).to(prec.dtype).eval()
        graph = build_graph(name, model, shapes)
        feeds = example_inputs(name, model, shapes)
        used: dict[int, float] = {}
        hooks = [
            m.register_forward_hook(_weight_bytes(m, used))
            for m in graph.modules()
            if any(True for _ in m.parameters(recurse=False))
        ]
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = graph(**feeds)
        for hook in hooks:
            hook.remove()
        outs = out if isinstance(out, tuple) else (out,)
        io = sum(_nbytes(t) for t in (*feeds.values(), *outs))
        costs[name] = GraphCost(
            name, float(counter.get_total_flops()), sum(used.values()) + io, prec
        )
    return costs


def _weight_bytes(module: nn.Module, used: dict[int, float]):
    def hook(mod, args, output):
        if isinstance(mod, nn.Embedding | PositionEmbedding):
            used[id(mod)] = used.get(id(mod), 0.0) + _nbytes(output)  # rows gathered
        else:
            used[id(mod)] = sum(_nbytes(p) for p in mod.parameters(recurse=False))

    return hook


def _nbytes(t: torch.Tensor) -> float:
    return float(t.numel() * t.element_size())
