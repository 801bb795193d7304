"""Export the HALO inference graphs to ONNX: one file per graph plus manifest.json.

The manifest records every input and output (name, shape, dtype), the opset, the precision per
graph and the model hash; `onnxruntime` and `tensorrt` engines load from that folder.
"""

from __future__ import annotations

import argparse
import logging

from halo_ros.engine.cli_args import add_engine_arguments, engine_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, backend=False)
    parser.add_argument('--out', help='output folder (default: --onnx-dir, else the cache folder)')
    parser.add_argument(
        '--graphs', nargs='+', help='export only these graphs (default: all + action_step_rtc)'
    )
    parser.add_argument(
        '--exporter',
        choices=('dynamo', 'torchscript'),
        default='dynamo',
        help='torch.onnx exporter (torchscript: deprecated, faster; VJP graph: always dynamo)',
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from halo_ros.engine.graphs import GRAPH_NAMES, RTC_GRAPH
    from halo_ros.engine.loading import (
        build_model,
        graph_precision,
        graph_shapes,
        onnx_folder,
    )
    from halo_ros.engine.onnx_export import Exporter, export_all

    config = engine_config(args, device='cpu', onnx_dir=args.out or args.onnx_dir)
    folder = onnx_folder(config)
    model, _, digest = build_model(config)
    graphs = args.graphs or [*GRAPH_NAMES, RTC_GRAPH]
    manifest = export_all(
        model,
        graph_shapes(config),
        folder,
        model_name=model.cfg.name,
        model_hash=digest[:16],
        precision=graph_precision(engine_config(args)),
        graphs=graphs,
        exporter=Exporter(args.exporter),
        progress=lambda items: tqdm(items, desc='export', unit='graph'),
    )
    for name, entry in manifest['graphs'].items():
        inputs = ', '.join(f'{i["name"]}{i["shape"]}:{i["dtype"]}' for i in entry['inputs'])
        log.info('%s (%s): %s', name, entry['precision'], inputs)
    log.info('wrote %d graphs and manifest.json to %s', len(manifest['graphs']), folder)
    return 0
