"""Benchmark what a seam costs: action chunk latency per seam mode against a plain chunk.

For each backend, `Engine.act` on one observation with the newest reasoning, plain (no seam),
then with a seam plan for a delay of d steps: prefix (training-time real-time chunking: the
executed prefix fixed as clean actions, no extra work), hard inpainting (no gradient) and guided
RTC (a vector-Jacobian product through the action expert at every flow step). DESIGN.md's
targets: prefix <= 1.2x, guided RTC <= 3x a plain chunk on the same backend.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

log = logging.getLogger(__name__)

MODES = ('none', 'prefix', 'hard', 'rtc')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--checkpoint', default='halo-tiny-transfer-cube', help="or 'random'")
    parser.add_argument(
        '--backend',
        dest='backends',
        nargs='+',
        choices=('torch', 'onnxruntime'),
        default=['torch', 'onnxruntime'],
    )
    parser.add_argument('--delay-steps', type=int, default=5)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', help='write the results here')


def run(args: argparse.Namespace) -> int:
    from halo_ros.benchmarks import report
    from halo_ros.engine.bench import percentiles
    from halo_ros.engine.interface import Observation
    from halo_ros.runtime.seam import SeamMode, plan_seam
    from halo_ros.runtime.settings import load_policy_engine, policy_settings

    rows = []
    for backend in args.backends:
        values = {'checkpoint': args.checkpoint, 'backend': backend, 'threads': args.threads}
        settings = policy_settings(values)
        hw = settings.card.get('image_hw')
        if hw:
            settings = policy_settings(values | {'image_height': hw[0], 'image_width': hw[1]})
        engine = load_policy_engine(settings)
        info = engine.info
        rng = np.random.default_rng(0)
        h, w = info.image_hw
        images = {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in info.cameras}
        observation = Observation(1, images, np.zeros(14, np.float32))
        reasoning = engine.reason(observation, settings.values['instruction'] or 'go', 1)
        noise = rng.standard_normal((info.chunk_length, info.action_dim)).astype(np.float32)
        tail = engine.act(observation, reasoning, noise).actions[5:]
        plain = None
        for mode in MODES:
            seam = None
            if mode != 'none':
                steps = info.chunk_length // 5  # s: a new chunk every 10 of 50 steps
                seam = plan_seam(SeamMode(mode), tail, info.chunk_length, args.delay_steps, steps)

            def act(seam=seam, engine=engine, obs=observation, reasoning=reasoning, noise=noise):
                engine.act(obs, reasoning, noise, seam)

            p50, p95 = percentiles(act, args.iters)
            plain = p50 if mode == 'none' else plain
            rows.append(
                {
                    'backend': backend,
                    'seam': mode,
                    'delay_steps': 0 if mode == 'none' else args.delay_steps,
                    'p50_ms': round(p50, 2),
                    'p95_ms': round(p95, 2),
                    'vs_plain': round(p50 / plain, 2),
                }
            )
        engine.close()
    report('seam cost (engine.act per seam mode)', rows, args.json, checkpoint=args.checkpoint)
    return 0
