"""Export the graphs to ONNX (one file per graph) with a manifest of what each one expects.

The manifest (`manifest.json`) records the model hash, the layout and chunk length the shapes
came from, the opset, and per graph its precision and every input and output (name, shape,
dtype). Backends refuse a folder whose manifest does not match the engine they are asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from halo_ros.engine.graphs import (
    GRAPH_FORMAT,
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
from halo_ros.engine.layout import PrefixLayout
from halo_ros.model.halo import HaloModel

log = logging.getLogger(__name__)

OPSET = 18
MANIFEST = 'manifest.json'


def _describe(names, tensors) -> list[dict]:
    return [
        {'name': n, 'shape': list(t.shape), 'dtype': dtype_name(t.dtype)}
        for n, t in zip(names, tensors, strict=True)
    ]


class Exporter(enum.Enum):
    DYNAMO = 'dynamo'  # torch.export based, the supported exporter (a few seconds per graph)
    TORCHSCRIPT = 'torchscript'  # deprecated tracer; ~10x faster to export, same graphs


def export_graph(
    name: str,
    model: HaloModel,
    shapes: GraphShapes,
    path: Path,
    *,
    opset: int = OPSET,
    exporter: Exporter = Exporter.DYNAMO,
) -> dict:
    """Export one graph (model already in the graph's precision) -> its manifest entry."""
    module = build_graph(name, model, shapes)
    _, input_names, output_names = GRAPHS[name]
    feeds = example_inputs(name, model, shapes)
    args = tuple(feeds[n] for n in input_names)
    with torch.no_grad() if name != RTC_GRAPH else torch.enable_grad():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    with warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter('ignore')  # tracer / pytree deprecation chatter
        if name == RTC_GRAPH:
            _export_functional(module, feeds, output_names, path, opset)
        elif exporter is Exporter.DYNAMO:
            program = torch.onnx.export(
                module,
                args,
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamo=False,
            )
    return {
        'file': path.name,
        'precision': _precision_of(model).value,
        'exporter': Exporter.DYNAMO.value if name == RTC_GRAPH else exporter.value,
        'inputs': _describe(input_names, args),
        'outputs': _describe(output_names, outputs),
        'sha256': _sha256(path),
    }


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The dynamo exporter logs one INFO line per folded constant."""
    chatty = [logging.getLogger(n) for n in ('onnx_ir', 'onnxscript', 'torch.onnx')]
    levels = [lg.level for lg in chatty]
    for lg in chatty:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(chatty, levels, strict=True):
            lg.setLevel(level)


def export_all(
    model: HaloModel,
    shapes: GraphShapes,
    folder: Path,
    *,
    model_name: str,
    model_hash: str,
    precision: dict[str, Precision],
    graphs: Iterable[str] = (*GRAPH_NAMES, RTC_GRAPH),
    opset: int = OPSET,
    exporter: Exporter = Exporter.DYNAMO,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> dict:
    """Export `graphs` into `folder` and write the manifest; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    copies: dict[Precision, HaloModel] = {}
    entries = {}
    for name in progress(list(graphs)):
        prec = precision.get(graph_precision_key(name), Precision.FP32)
        if prec not in copies:
            copies[prec] = model if prec.dtype == model.dtype else cast_model(model, prec.dtype)
        path = folder / f'{name}.onnx'
        entries[name] = export_graph(
            name, copies[prec], shapes, path, opset=opset, exporter=exporter
        )
        log.info('exported %s (%s)', name, prec.value)
    manifest = {
        'graph_format': GRAPH_FORMAT,
        'model_name': model_name,
        'model_hash': model_hash,
        'opset': opset,
        'torch': torch.__version__,
        'chunk_length': shapes.chunk_length,
        'layout': dataclasses.asdict(shapes.layout),
        'graphs': entries,
    }
    with open(folder / MANIFEST, 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=1)
    return manifest


def _export_functional(module, feeds: dict, output_names, path: Path, opset: int) -> None:
    """torch.func.vjp is traced to plain aten ops first (make_fx), since neither exporter traces
    a functorch transform; the resulting graph computes the backward without autograd."""
    from torch.fx.experimental.proxy_tensor import make_fx

    args = tuple(feeds.values())
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)  # a vjp w.r.t. x_t only: no weight gradients in the graph
    try:
        gm = make_fx(module)(*args)
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    # Name the graph inputs as the manifest does (op outputs named like an input move aside,
    # else the ONNX initializer of aten.t would be called `t`).
    for node in gm.graph.nodes:
        if node.op == 'call_function' and node.name in feeds:
            node.name = node.name + '_'
    placeholders = [n for n in gm.graph.nodes if n.op == 'placeholder']
    for node, name in zip(placeholders, feeds, strict=True):
        node.name = node.target = name
    gm.graph.lint()
    gm.recompile()
    program = torch.onnx.export(
        gm, args, output_names=list(output_names), opset_version=opset, dynamo=True, verbose=False
    )
    program.save(str(path))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no ONNX manifest; run `halo-ros export` first')
    with open(path, encoding='utf-8') as f:
        manifest = json.load(f)
    if manifest.get('graph_format', 1) != GRAPH_FORMAT:
        raise ValueError(
            f'{path}: graphs of format {manifest.get("graph_format", 1)}, this halo_ros runs '
            f'format {GRAPH_FORMAT}; export again (halo-ros export)'
        )
    return manifest


def manifest_shapes(manifest: dict) -> GraphShapes:
    raw = dict(manifest['layout'])
    for key in ('vit_hw', 'vit_grid', 'latent_grid', 'latent_hw'):
        raw[key] = tuple(raw[key])
    return GraphShapes(PrefixLayout(**raw), int(manifest['chunk_length']))


def _precision_of(model: HaloModel) -> Precision:
    return {p.dtype: p for p in Precision}[model.dtype]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
