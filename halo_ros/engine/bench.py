"""Benchmark the engine: latency per graph, action chunk and reasoning cycle against the floor.

Per backend: p50/p95 of every graph on random inputs, of a whole action chunk (fresh prefix with
reasoning text and subgoal latents, all flow steps) and of a whole reasoning cycle (text up to
decode_capacity tokens, subgoal, VAE decode); each beside its floor on the named device
(measured / floor). Also the cached-prefix flow step against recomputing the prefix at every
step, and the chunk latency of each backend against the eager torch reference.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np

from halo_ros.engine.cli_args import add_engine_arguments, engine_config

log = logging.getLogger(__name__)

REASONING_TEXT = (
    '<|plan|>pick up the cube and hand it over<|subtask|>grasp the cube with the left arm'
    '<|movement|>[LEFT]: move down and close the gripper [RIGHT]: hold'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, backend=False)
    parser.add_argument(
        '--backend',
        dest='backends',
        nargs='+',
        choices=('torch', 'onnxruntime', 'tensorrt'),
        default=['torch', 'onnxruntime'],
    )
    parser.add_argument(
        '--floor-device',
        choices=('cpu', 'h100-sxm', 'h100-pcie', 'h200'),
        help='device of the floor (default: cpu probe on cpu, else h100-sxm)',
    )
    parser.add_argument('--iters', type=int, default=20, help='timed runs per graph and chunk')
    parser.add_argument('--reason-iters', type=int, default=3, help='timed reasoning cycles')
    parser.add_argument('--threads', type=int, default=0, help='torch / ORT threads (0: default)')
    parser.add_argument('--no-eager', action='store_true', help='skip the eager torch reference')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--floor-only',
        action='store_true',
        help='print the computed floor of each graph and stage; run nothing, allocate no weights',
    )


def percentiles(fn, iters: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(args: argparse.Namespace) -> int:
    import torch

    from halo_ros.benchmarks import report
    from halo_ros.engine.floor import DATASHEETS, graph_costs, probe_cpu
    from halo_ros.engine.graph_engine import GraphEngine
    from halo_ros.engine.graphs import GRAPH_NAMES, example_inputs
    from halo_ros.engine.interface import Observation, Reasoning
    from halo_ros.engine.loading import build_model, graph_precision, graph_shapes

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.floor_only:
        return floor_only(args)
    config = engine_config(args)
    if 'tensorrt' in args.backends:  # fail before any measurement, not after minutes of it
        from halo_ros.engine.trt_runner import (
            TensorRTUnavailableError,
            import_tensorrt,
            require_cuda,
        )

        try:
            import_tensorrt()
            require_cuda(config.device)
        except TensorRTUnavailableError as e:
            log.error('%s', e)
            return 2
    model, tokenizer, digest = build_model(config)
    cfg, shapes, precision = model.cfg, graph_shapes(config), graph_precision(config)
    layout = shapes.layout
    floor_name = args.floor_device or ('cpu' if config.device == 'cpu' else 'h100-sxm')
    device_spec = probe_cpu() if floor_name == 'cpu' else DATASHEETS[floor_name]
    costs = graph_costs(cfg, shapes, precision)
    floor = {name: c.floor_ms(device_spec) for name, c in costs.items()}
    chunk_floor = floor['vit'] + floor['prefill'] + config.flow_steps * floor['action_step']

    rng = np.random.default_rng(0)
    h, w = config.image_hw
    obs = Observation(
        0,
        {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in config.cameras},
        np.zeros(cfg.action_dim, np.float32),
    )
    latents = rng.standard_normal((layout.latent_tokens, cfg.patch_latent_dim)).astype(np.float32)
    reasoning = Reasoning(
        1,
        'hand over the cube',
        REASONING_TEXT,
        subgoal_tokens=latents,
        subgoal_grid=layout.latent_grid,
    )
    noise = rng.standard_normal((config.chunk_length, cfg.action_dim)).astype(np.float32)

    rows: list[dict] = []

    def row(backend, what, p50, p95, floor_ms=None, bound='', note=''):
        rows.append(
            {
                'backend': backend,
                'what': what,
                'p50_ms': p50,
                'p95_ms': p95,
                'floor_ms': floor_ms if floor_ms else '',
                'measured/floor': p50 / floor_ms if floor_ms else '',
                'bound': bound,
                'note': note,
            }
        )

    chunk_p50 = {}
    if not args.no_eager:
        from halo_ros.engine.torch_engine import TorchEngine

        eager = TorchEngine(
            model,
            tokenizer,
            model_name=cfg.name,
            model_hash=digest[:16],
            cameras=config.cameras,
            chunk_length=config.chunk_length,
            flow_steps=config.flow_steps,
            image_hw=config.image_hw,
        )
        p50, p95 = percentiles(lambda: eager.act(obs, reasoning, noise), args.iters)
        chunk_p50['torch-eager'] = p50
        row('torch-eager', 'action chunk', p50, p95, chunk_floor)

    for backend in args.backends:
        runner = _runner(backend, model, shapes, config, args)
        engine = GraphEngine(
            runner,
            tokenizer,
            cfg,
            shapes,
            model_hash=digest[:16],
            cameras=config.cameras,
            image_hw=config.image_hw,
            flow_steps=config.flow_steps,
            subgoal_steps=config.subgoal_steps,
        )
        feeds = {
            name: example_inputs(
                name, model, shapes, dtype=precision['prefill'].dtype, device=runner.device
            )
            for name in GRAPH_NAMES
        }
        if precision['vit'] != precision['prefill']:  # the ViT output feeds prefill
            feeds['prefill']['vit_embeds'] = feeds['prefill']['vit_embeds'].to(
                precision['vit'].dtype
            )
        step = {}
        for name in GRAPH_NAMES:
            p50, p95 = percentiles(lambda n=name, r=runner, f=feeds: r.run(n, f[n]), args.iters)
            step[name] = p50
            row(backend, name, p50, p95, floor[name], bound=costs[name].bound(device_spec))
        p50, p95 = percentiles(lambda e=engine: e.act(obs, reasoning, noise), args.iters)
        chunk_p50[backend] = p50
        row(backend, f'action chunk ({config.flow_steps} steps)', p50, p95, chunk_floor)

        def recompute_step(runner=runner, f=feeds):  # what a step costs without the cache
            runner.run('prefill', f['prefill'])
            runner.run('action_step', f['action_step'])

        p50, p95 = percentiles(recompute_step, args.iters)
        speedup = p50 / step['action_step']
        note = f'cached-prefix action_step is {speedup:.1f}x faster'
        row(backend, 'flow step, prefix recomputed', p50, p95, note=note)
        tokens = []

        def cycle(engine=engine, tokens=tokens):
            tokens.append(
                engine.reason(
                    obs, 'hand over the cube', 1, max_tokens=layout.decode_capacity
                ).timings_ms['tokens']
            )

        p50, p95 = percentiles(cycle, args.reason_iters, warmup=1)
        n_tokens = float(np.median(tokens))
        reason_floor = (
            floor['vit']
            + 2 * floor['prefill']
            + n_tokens * floor['decode_step']
            + config.subgoal_steps * floor['subgoal_step']
            + floor['vae_decode']
        )
        row(backend, f'reasoning cycle ({n_tokens:.0f} tokens + subgoal)', p50, p95, reason_floor)
        memory = 'cuda max allocated' if config.device.startswith('cuda') else 'process peak RSS'
        row(
            backend,
            'peak memory',
            '',
            '',
            note=f'{peak_memory_mb(config.device):.0f} MB ({memory})',
        )
        engine.close()

    reference = chunk_p50.get('torch-eager')
    speedups = {b: reference / p for b, p in chunk_p50.items() if reference}
    for b, x in speedups.items():
        if b != 'torch-eager':
            row(
                b,
                'action chunk vs torch eager',
                chunk_p50[b],
                '',
                note=f'speed {x:.2f}x of torch eager',
            )
    report(
        f'engine {cfg.name} on {config.device} (floor: {device_spec.name})',
        rows,
        args.json,
        device_spec={
            'name': device_spec.name,
            'bandwidth_gb_s': device_spec.bandwidth_gb_s,
            'peak_tflops': {p.value: v for p, v in device_spec.peak_tflops.items()},
            'source': device_spec.source,
        },
        graph_costs={
            n: {
                'gflop': c.flops / 1e9,
                'gbytes': c.bytes / 1e9,
                'precision': c.precision.value,
                'floor_ms': floor[n],
                'bound': c.bound(device_spec),
            }
            for n, c in costs.items()
        },
        chunk_speedup_vs_eager=speedups,
        threads=torch.get_num_threads(),
    )
    return 0


def floor_only(args: argparse.Namespace) -> int:
    """The floor table of a config on a device (computed from datasheets or the CPU probe)."""
    import dataclasses

    from halo_ros.benchmarks import report
    from halo_ros.engine.floor import DATASHEETS, graph_costs, probe_cpu
    from halo_ros.engine.loading import graph_precision, graph_shapes
    from halo_ros.model.config import load_config

    config = engine_config(args)
    floor_name = args.floor_device or ('cpu' if config.device == 'cpu' else 'h100-sxm')
    device_spec = probe_cpu() if floor_name == 'cpu' else DATASHEETS[floor_name]
    if floor_name != 'cpu':  # the precision the graphs would run in on that GPU
        config = dataclasses.replace(config, device='cuda')
    costs = graph_costs(load_config(config.model), graph_shapes(config), graph_precision(config))
    floor = {n: c.floor_ms(device_spec) for n, c in costs.items()}
    rows = [
        {
            'what': n,
            'precision': c.precision.value,
            'GFLOP': c.flops / 1e9,
            'GB moved': c.bytes / 1e9,
            'floor_ms': floor[n],
            'bound': c.bound(device_spec),
        }
        for n, c in costs.items()
    ]
    steps, tokens, sub = config.flow_steps, config.decode_capacity, config.subgoal_steps
    chunk = floor['vit'] + floor['prefill'] + steps * floor['action_step']
    cycle = (
        floor['vit']
        + 2 * floor['prefill']
        + tokens * floor['decode_step']
        + sub * floor['subgoal_step']
        + floor['vae_decode']
    )
    blank = {'precision': '', 'GFLOP': '', 'GB moved': '', 'bound': ''}
    rows.append(
        blank | {'what': f'action chunk (vit + prefill + {steps} steps)', 'floor_ms': chunk}
    )
    rows.append(
        blank
        | {
            'what': f'reasoning cycle ({tokens} tokens + {sub} subgoal steps + vae)',
            'floor_ms': cycle,
        }
    )
    report(
        f'computed floor: {config.model} on {device_spec.name} (nothing measured)',
        rows,
        args.json,
        device_spec={'name': device_spec.name, 'source': device_spec.source},
        prefix_rows=graph_shapes(config).layout.prefix_rows,
    )
    return 0


def _runner(backend: str, model, shapes, config, args):
    from halo_ros.engine.loading import ensure_onnx, graph_precision

    if backend == 'torch':
        from halo_ros.engine.runner import TorchRunner

        return TorchRunner(
            model, shapes, precision=graph_precision(config), cuda_graphs=config.cuda_graphs
        )
    if backend == 'onnxruntime':
        from halo_ros.engine.ort_runner import OrtRunner

        return OrtRunner(ensure_onnx(config), device=config.device, threads=args.threads)
    from halo_ros.engine.trt_runner import TrtRunner

    return TrtRunner.from_onnx(
        ensure_onnx(config), device=config.device, cache_dir=config.engine_cache
    )
