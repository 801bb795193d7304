"""Command-line arguments shared by `halo-ros export`, `build-engine` and `bench`."""

from __future__ import annotations

import argparse

from halo_ros.engine.loading import BACKENDS, DEFAULT_CAMERAS, PRECISIONS, EngineConfig


def add_engine_arguments(parser: argparse.ArgumentParser, *, backend: bool = True) -> None:
    parser.add_argument('--config', default='halo-tiny', help='model preset or YAML path')
    parser.add_argument('--checkpoint', help='folder with ema.safetensors; default: random weights')
    if backend:
        parser.add_argument('--backend', choices=BACKENDS, default='torch')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument(
        '--cameras', type=int, default=len(DEFAULT_CAMERAS), help='camera frames per prefix'
    )
    parser.add_argument('--image-hw', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'))
    parser.add_argument('--chunk-length', type=int, default=50)
    parser.add_argument('--flow-steps', type=int, default=9)
    parser.add_argument('--subgoal-steps', type=int, default=24)
    parser.add_argument('--text-capacity', type=int, default=160)
    parser.add_argument('--decode-capacity', type=int, default=64)
    parser.add_argument('--precision', choices=PRECISIONS, default='auto')
    parser.add_argument('--onnx-dir', help='exported graphs; default: a cache folder')
    parser.add_argument('--engine-cache', help='TensorRT engine cache folder')
    parser.add_argument('--seed', type=int, default=0, help='random-weight seed')


def engine_config(args: argparse.Namespace, **overrides) -> EngineConfig:
    cameras = (
        DEFAULT_CAMERAS[: args.cameras]
        if args.cameras <= len(DEFAULT_CAMERAS)
        else tuple(f'cam_{i}' for i in range(args.cameras))
    )
    fields = {
        'model': args.config,
        'checkpoint': args.checkpoint,
        'backend': getattr(args, 'backend', 'torch'),
        'device': args.device,
        'cameras': cameras,
        'image_hw': tuple(args.image_hw),
        'chunk_length': args.chunk_length,
        'flow_steps': args.flow_steps,
        'subgoal_steps': args.subgoal_steps,
        'text_capacity': args.text_capacity,
        'decode_capacity': args.decode_capacity,
        'precision': args.precision,
        'onnx_dir': args.onnx_dir,
        'engine_cache': args.engine_cache,
        'seed': args.seed,
    }
    return EngineConfig(**(fields | overrides))
