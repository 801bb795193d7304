"""Seam harness: injected delay x seam mode (none, hard, RTC) and ACT temporal ensembling.

No ROS and no HALO weights: the model is `smooth_flow.SmoothFlowEngine`, a deterministic Gaussian
flow whose chunks are smooth but disagree (random HALO weights make seams meaningless). The real
`Actor` (seam planning, guidance, delay estimate) runs against a simulated clock: an inference
started at tick t lands d ticks later, a new one starts every s ticks, and the controller executes
chunks by the `ChunkSchedule` rule (aligned by stamp, dropped prefix clamped to what ran).

Metrics (DESIGN.md): at each tick where the executed chunk changes, the largest per-joint change
from the previous tick divided by that joint's median per-tick change away from seams (1.0 =
invisible); seam jerk likewise with the third difference over dt^3 (the three windows that
contain the switch). p95 and max over the seams of a run, arms and grippers separately.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from halo_ros.engine.interface import Observation
from halo_ros.joints import DOF, GRIPPER_INDICES
from halo_ros.runtime.actor import Actor, ActorConfig
from halo_ros.runtime.chunk import PolicyChunk
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.feedback import ChunkSchedule
from halo_ros.runtime.seam import SeamMode, WeightSchedule

log = logging.getLogger(__name__)

DELAYS = (0, 2, 4, 8)
# seam mode (+ RTC weight schedule) -> how the actor runs; 'act_te' ensembles unguided chunks
VARIANTS = {
    'none': (SeamMode.NONE, WeightSchedule.EXP),
    'hard': (SeamMode.HARD, WeightSchedule.EXP),
    'rtc_linear': (SeamMode.RTC, WeightSchedule.LINEAR),
    'rtc_exp': (SeamMode.RTC, WeightSchedule.EXP),
}
MODES = (*VARIANTS, 'act_te')
ARM_INDICES = tuple(i for i in range(DOF) if i not in GRIPPER_INDICES)
ACT_TE_K = 0.01  # ACT's exp(-k i) weights, i = 0 the oldest prediction


@dataclass(frozen=True)
class HarnessConfig:
    ticks: int = 1500  # 30 s at 50 Hz
    dt_s: float = 0.02
    chunk_length: int = 50
    flow_steps: int = 9
    execution_steps: int = 10  # s: a new inference starts every s ticks (5 chunks/s)
    max_guidance: float = 10.0
    seed: int = 0
    warmup_chunks: int = 3  # seams before this chunk are not scored

    def __post_init__(self):
        if max(DELAYS) > self.execution_steps or self.execution_steps > self.chunk_length - max(
            DELAYS
        ):
            raise ValueError(
                f'need d <= s <= H - d for every delay: s={self.execution_steps}, '
                f'H={self.chunk_length}, d up to {max(DELAYS)}'
            )


class _SimClock:
    def __init__(self):
        self.ns = 0

    def now(self) -> int:
        return self.ns


def _simulate(config: HarnessConfig, variant: str, delay: int, on_tick) -> list:
    """Run the actor on the simulated clock; `on_tick(tick, schedule, arrived)` after each tick's
    inference (if any). Returns every chunk with its arrival time (ns)."""
    from halo_ros.runtime.smooth_flow import SmoothFlowEngine

    dt_ns = round(config.dt_s * 1e9)
    clock = _SimClock()

    def land():  # the injected delay: the chunk is published d ticks after its observation
        clock.ns += delay * dt_ns

    engine = SmoothFlowEngine(
        chunk_length=config.chunk_length,
        flow_steps=config.flow_steps,
        dt_s=config.dt_s,
        seed=config.seed,
        on_act=land,
    )
    schedule = ChunkSchedule(dt_ns)
    arrived: list[tuple[PolicyChunk, int]] = []

    def on_chunk(chunk: PolicyChunk, publish_ns: int) -> None:
        schedule.record(chunk, publish_ns)
        arrived.append((chunk, publish_ns))

    def observe(now_ns: int, after_ns: int) -> Observation | None:
        return Observation(now_ns, {}, np.zeros(DOF, np.float32)) if now_ns > after_ns else None

    actor = Actor(
        engine,
        ContextStore(),
        observe,
        schedule,
        config=ActorConfig(
            control_dt_s=config.dt_s,
            seam=VARIANTS[variant][0],
            weight_schedule=VARIANTS[variant][1],
            max_guidance=config.max_guidance,
            seed=config.seed + 1,
        ),
        clock_ns=clock.now,
        on_chunk=on_chunk,
    )
    for tick in range(config.ticks):
        if tick % config.execution_steps == 1:
            clock.ns = tick * dt_ns
            if actor.step() is None:
                raise RuntimeError(f'the harness actor produced no chunk at tick {tick}')
        on_tick(tick, schedule, arrived)
    return arrived


def _scored_from(arrived, config: HarnessConfig) -> int:
    return arrived[config.warmup_chunks][1] if len(arrived) > config.warmup_chunks else 1 << 62


def _commands_switched(config: HarnessConfig, variant: str, delay: int):
    """The controller switches to each chunk on arrival (the `ChunkSchedule` rule)."""
    dt_ns = round(config.dt_s * 1e9)
    commands, seqs = [], []

    def on_tick(tick, schedule, arrived):
        command = schedule.command(tick * dt_ns)
        if command is not None:
            commands.append(command[1])
            seqs.append((tick * dt_ns, command[0].seq))

    arrived = _simulate(config, variant, delay, on_tick)
    first_scored = _scored_from(arrived, config)
    seams = [
        i
        for i in range(1, len(seqs))
        if seqs[i][1] != seqs[i - 1][1] and seqs[i][0] >= first_scored
    ]
    return np.array(commands), seams


def _commands_ensembled(config: HarnessConfig, delay: int):
    """ACT temporal ensembling over every chunk received so far that covers the tick."""
    dt_ns = round(config.dt_s * 1e9)
    commands, gained = [], []

    def on_tick(tick, schedule, arrived):
        t_ns = tick * dt_ns
        received = [(c, r) for c, r in arrived if r <= t_ns]
        covering = [
            c.actions[(t_ns - c.stamp_ns) // dt_ns]
            for c, _ in received
            if (t_ns - c.stamp_ns) // dt_ns < c.length
        ]
        if covering:
            weights = np.exp(-ACT_TE_K * np.arange(len(covering)))  # oldest first
            commands.append((weights[:, None] * np.array(covering)).sum(0) / weights.sum())
            gained.append((t_ns, len(received)))

    arrived = _simulate(config, 'none', delay, on_tick)
    first_scored = _scored_from(arrived, config)
    seams = [
        i
        for i in range(1, len(gained))
        if gained[i][1] > gained[i - 1][1] and gained[i][0] >= first_scored
    ]
    return np.array(commands), seams


def seam_metrics(commands: np.ndarray, seams: list[int], dt_s: float) -> dict[str, float]:
    """p95 / max seam jump and jerk ratios for arms and grippers (see the module docstring)."""
    step = np.abs(np.diff(commands, axis=0))  # step[t - 1] = |q[t] - q[t - 1]|
    jerk = np.abs(np.diff(commands, n=3, axis=0)) / dt_s**3  # jerk[t - 3]: q[t-3..t]
    seam_set = set(seams)
    away_step = [t - 1 for t in range(1, len(commands)) if t not in seam_set]
    jerk_windows = {t: (t, t + 1, t + 2) for t in seams}  # windows ending at t..t+2 hold the switch
    touched = {w for ws in jerk_windows.values() for w in ws}
    away_jerk = [t - 3 for t in range(3, len(commands)) if t not in touched]
    eps = 1e-12
    step_scale = np.median(step[away_step], axis=0) + eps
    jerk_scale = np.median(jerk[away_jerk], axis=0) + eps
    result = {'seams': len(seams)}
    for group, idx in (('arm', list(ARM_INDICES)), ('grip', list(GRIPPER_INDICES))):
        jumps = [np.max(step[t - 1, idx] / step_scale[idx]) for t in seams]
        jerks = [
            max(np.max(jerk[w - 3, idx] / jerk_scale[idx]) for w in ws if 3 <= w < len(commands))
            for ws in jerk_windows.values()
        ]
        result[f'{group}_jump_p95'] = float(np.percentile(jumps, 95)) if jumps else float('nan')
        result[f'{group}_jump_max'] = float(np.max(jumps)) if jumps else float('nan')
        result[f'{group}_jerk_p95'] = float(np.percentile(jerks, 95)) if jerks else float('nan')
        result[f'{group}_jerk_max'] = float(np.max(jerks)) if jerks else float('nan')
    return result


def evaluate(config: HarnessConfig = HarnessConfig(), delays=DELAYS, modes=MODES) -> list[dict]:
    rows = []
    for delay in delays:
        for mode in modes:
            if mode == 'act_te':
                commands, seams = _commands_ensembled(config, delay)
            else:
                commands, seams = _commands_switched(config, mode, delay)
            rows.append(
                {'mode': mode, 'delay_steps': delay, **seam_metrics(commands, seams, config.dt_s)}
            )
    by_key = {(r['delay_steps'], r['mode']): r for r in rows}
    for row in rows:
        none = by_key.get((row['delay_steps'], 'none'))
        if none is not None:
            row['arm_jump_p95_vs_none'] = row['arm_jump_p95'] / none['arm_jump_p95']
            row['arm_jump_max_vs_none'] = row['arm_jump_max'] / none['arm_jump_max']
    return rows


# -- `halo-ros seam-eval` --------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument('--ticks', type=int, default=HarnessConfig.ticks, help='ticks per run')
    parser.add_argument('--execution-steps', type=int, default=HarnessConfig.execution_steps)
    parser.add_argument('--max-guidance', type=float, default=HarnessConfig.max_guidance)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='write the report JSON here')


def run(args) -> int:
    import torch

    from halo_ros.benchmarks import report

    torch.set_num_threads(1)
    config = HarnessConfig(
        ticks=args.ticks,
        execution_steps=args.execution_steps,
        max_guidance=args.max_guidance,
        seed=args.seed,
    )
    rows = evaluate(config)
    columns = [
        'mode',
        'delay_steps',
        'seams',
        'arm_jump_p95',
        'arm_jump_max',
        'grip_jump_p95',
        'grip_jump_max',
        'arm_jerk_p95',
        'arm_jerk_max',
        'grip_jerk_p95',
        'grip_jerk_max',
        'arm_jump_p95_vs_none',
        'arm_jump_max_vs_none',
    ]
    rows = [{c: row.get(c, '') for c in columns} for row in rows]
    print(
        'model: smooth deterministic Gaussian flow (halo_ros.runtime.smooth_flow), not HALO '
        f'weights; H={config.chunk_length}, {config.flow_steps} flow steps, '
        f's={config.execution_steps}, dt={config.dt_s:g} s, {config.ticks} ticks per run'
    )
    report('seam-eval', rows, args.json, config=config.__dict__)
    return 0
