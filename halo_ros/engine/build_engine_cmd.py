"""Build TensorRT engines from the exported ONNX graphs (needs tensorrt and a CUDA GPU).

Engines are cached under a key of the ONNX file, model hash, GPU name and TensorRT version, so
running it again only builds what changed. Export first (`halo-ros export`), or let this command
export into the cache folder.
"""

from __future__ import annotations

import argparse
import logging

from halo_ros.engine.cli_args import add_engine_arguments, engine_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, backend=False)
    parser.set_defaults(device='cuda')
    parser.add_argument('--graphs', nargs='+', help='build only these graphs (default: all)')


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from halo_ros.engine.loading import ensure_onnx
    from halo_ros.engine.trt_runner import (
        TensorRTUnavailableError,
        build_engines,
        import_tensorrt,
        require_cuda,
    )

    config = engine_config(args, backend='tensorrt')
    try:  # fail before exporting anything when the machine cannot build engines at all
        import_tensorrt()
        require_cuda(config.device)
    except TensorRTUnavailableError as e:
        log.error('%s', e)
        return 2
    folder = ensure_onnx(config)
    paths = build_engines(
        folder,
        device=config.device,
        cache_dir=config.engine_cache,
        graphs=args.graphs,
        progress=lambda items: tqdm(items, desc='build', unit='engine'),
    )
    for name, path in paths.items():
        log.info('%s: %s', name, path)
    return 0
