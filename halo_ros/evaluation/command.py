"""Evaluate a policy in closed loop on the simulator: success rate over unseen seeds.

The same engine, runtime and controller as the policy node (`halo_ros.evaluation.closed_loop`),
in lockstep (the simulation waits for each chunk: the model and data alone) or in real time
(everything on the wall clock, as in the demo). Prints the success rate with its 95 % Wilson
interval, the staged rewards reached, where failures stopped, chunk latency and seam steps; writes
`eval.json` and a contact sheet per failed episode (camera, subgoal, subtask over time).

    halo-ros eval --episodes 50                      # lockstep, seeds 1000.., the shipped model
    halo-ros eval --clock realtime --episodes 20
    halo-ros eval --delay-steps 2 --seam prefix      # a GPU's ~40 ms, training-time RTC seams
"""

from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = 'halo-tiny-transfer-cube'
FIRST_SEED = 1000  # `halo-ros collect` uses seeds 1.. for demonstrations


def add_policy_arguments(parser) -> None:
    """The engine and seam every evaluation runs (`halo-ros eval`, `halo-ros eval-open-loop`)."""
    parser.add_argument('--checkpoint', default=DEFAULT_CHECKPOINT, help="folder, or 'random'")
    parser.add_argument('--backend', default='onnxruntime', choices=('torch', 'onnxruntime'))
    parser.add_argument('--seam', default='auto', choices=('auto', 'prefix', 'rtc', 'hard', 'none'))
    parser.add_argument('--no-subgoal', action='store_true', help='reason without a subgoal')
    parser.add_argument('--threads', type=int, default=1, help='engine threads')
    parser.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='PARAM=VALUE',
        help='any policy node parameter (halo_ros.runtime.settings), YAML-typed',
    )


def policy_settings_from(args, **values):
    """The policy settings of `add_policy_arguments`' options (+ `values`); the cameras deliver
    what the checkpoint was trained on unless set. Raises ValueError / FileNotFoundError."""
    import yaml

    from halo_ros.runtime.settings import policy_settings

    values = {
        'checkpoint': args.checkpoint,
        'backend': args.backend,
        'threads': args.threads,
        'seam_mode': args.seam,
        'subgoal': not args.no_subgoal,
        **values,
    }
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--set {item!r}: expected PARAM=VALUE')
        values[key.strip()] = yaml.safe_load(value)
    settings = policy_settings(values)
    hw = settings.card.get('image_hw')
    if hw and not {'image_height', 'image_width'} & set(values):
        values |= {'image_height': int(hw[0]), 'image_width': int(hw[1])}
        settings = policy_settings(values)
    return settings


def add_arguments(parser) -> None:
    from halo_ros.evaluation.closed_loop import CLOCKS, EvalConfig

    d = EvalConfig()
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--first-seed', type=int, default=FIRST_SEED)
    parser.add_argument('--clock', default=d.clock, choices=CLOCKS)
    parser.add_argument('--episode-seconds', type=float, default=d.episode_seconds)
    parser.add_argument(
        '--execution-steps', type=int, default=d.execution_steps, help='lockstep: ticks per chunk'
    )
    parser.add_argument(
        '--delay-steps',
        type=int,
        default=d.delay_steps,
        help='lockstep: emulated chunk latency in ticks (2 ~ a GPU at 50 Hz)',
    )
    add_policy_arguments(parser)
    parser.add_argument('--reasoning-period-s', type=float, default=None)
    parser.add_argument('--out', default=None, help='results folder (default runs/eval-<time>)')
    parser.add_argument('--no-sheets', action='store_true', help='no contact sheets of failures')


def run(args) -> int:
    from halo_ros.evaluation.closed_loop import EpisodeRunner, EvalConfig
    from halo_ros.evaluation.report import contact_sheet, summarize, summary_lines
    from halo_ros.runtime.settings import load_policy_engine

    if args.episodes < 1:
        log.error('--episodes must be at least 1, got %d', args.episodes)
        return 2
    extra = {}
    if args.reasoning_period_s is not None:
        extra['reasoning_period_s'] = args.reasoning_period_s
    try:
        settings = policy_settings_from(args, **extra)
        config = EvalConfig(
            clock=args.clock,
            episode_seconds=args.episode_seconds,
            execution_steps=args.execution_steps,
            delay_steps=args.delay_steps,
            keep_frames=not args.no_sheets,
        )
    except (FileNotFoundError, ValueError) as error:
        log.error('%s', error)
        return 2
    out = os.path.abspath(args.out or os.path.join('runs', time.strftime('eval-%Y%m%d-%H%M%S')))
    os.makedirs(out, exist_ok=True)
    engine = load_policy_engine(settings)
    runner = EpisodeRunner(engine, settings.policy, config)
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    v = settings.values
    print(
        f'halo-ros eval: {args.episodes} episodes ({args.clock}), seeds {seeds.start}-'
        f'{seeds.stop - 1}, {v["checkpoint"] or "random weights"} on {v["backend"]}, seam '
        f'{v["seam_mode"]}, cameras {v["cameras"]} at {v["image_width"]}x{v["image_height"]}'
    )
    results = []
    try:
        for k, seed in enumerate(seeds):
            result = runner.run(seed)
            results.append(result)
            verdict = (
                f'SUCCESS in {result.seconds_to_success:.1f} s'
                if result.success
                else f'failure at {result.stage} (best reward {result.max_reward}/4)'
            )
            print(
                f'episode {k + 1}/{args.episodes} (seed {seed}): {verdict}; {result.chunks} '
                f'chunks, subtasks {len(result.subtasks)}',
                flush=True,
            )
            if not result.success and result.moments:
                title = f'seed {seed}: {verdict} ({v["checkpoint"] or "random"})'
                contact_sheet(result.moments, title, os.path.join(out, f'failure_seed{seed}.png'))
    finally:
        runner.close()
        engine.close()
    summary = summarize(results)
    for line in summary_lines(summary):
        print(line)
    from halo_ros.benchmarks import machine

    document = {
        'clock': args.clock,
        'config': {
            'episode_seconds': config.episode_seconds,
            'execution_steps': config.execution_steps,
            'delay_steps': config.delay_steps,
        },
        'policy': {k: v[k] for k in sorted(v) if 'key' not in k},
        'machine': machine(),
        'summary': summary,
        'episodes': [r.to_dict() for r in results],
    }
    path = os.path.join(out, 'eval.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(document, f, indent=1)
    sheets = sum(not r.success for r in results) if not args.no_sheets else 0
    print(f'wrote {path}' + (f' and {sheets} contact sheet(s) of failures' if sheets else ''))
    from halo_ros.viz.summary import write_eval_summary

    print(f'summary page (success per seed, contact sheets): {write_eval_summary(out)}')
    return 0
