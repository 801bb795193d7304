"""Benchmark the policy runtime: does reasoning ever hold up the action chunks?

Runs the real `PolicyRuntime` (actor + reasoner threads) on halo-tiny (random weights) with
synthetic camera frames at 30 Hz, once without and once with reasoning, and reports chunk
inter-arrival p50/p99/max; with reasoning also over the intervals that overlapped a reasoning
cycle. If reasoning blocked the actor, those gaps would be as long as a reasoning cycle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from halo_ros.engine.interface import Engine
from halo_ros.joints import BIMANUAL_JOINTS


class TimedEngine(Engine):
    """Passes through to an engine and records when each reasoning cycle ran (monotonic s)."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.reason_spans: list[tuple[float, float]] = []

    @property
    def info(self):
        return self._engine.info

    def act(self, observation, reasoning, noise, seam=None):
        return self._engine.act(observation, reasoning, noise, seam)

    def reason(self, observation, instruction, version, **kwargs):
        start = time.monotonic()
        try:
            return self._engine.reason(observation, instruction, version, **kwargs)
        finally:
            self.reason_spans.append((start, time.monotonic()))


@dataclass
class AsyncRun:
    arrivals_s: list[float] = field(default_factory=list)
    reason_spans: list[tuple[float, float]] = field(default_factory=list)

    def intervals(self, *, during_reasoning: bool | None = None) -> np.ndarray:
        """Chunk inter-arrival times; optionally only those that did (not) overlap a cycle."""
        out = []
        for a, b in zip(self.arrivals_s, self.arrivals_s[1:], strict=False):
            overlaps = any(s < b and e > a for s, e in self.reason_spans)
            if during_reasoning is None or overlaps == during_reasoning:
                out.append(b - a)
        return np.array(out)


def run_policy(
    engine: Engine,
    *,
    seconds: float,
    chunk_period_s: float,
    reasoning: bool,
    reasoning_period_s: float = 0.1,
    seam: str = 'none',
    max_tokens: int = 16,
) -> AsyncRun:
    """Feed synthetic frames + joints for `seconds` and record chunk arrivals and cycles."""
    from halo_ros.runtime.actor import ActorConfig
    from halo_ros.runtime.observation import AssemblyConfig
    from halo_ros.runtime.policy import PolicyConfig, PolicyRuntime
    from halo_ros.runtime.seam import SeamMode

    timed = TimedEngine(engine)
    run = AsyncRun(reason_spans=timed.reason_spans)
    info = engine.info
    config = PolicyConfig(
        assembly=AssemblyConfig(cameras=info.cameras, image_hw=info.image_hw, max_age_ms=1000),
        actor=ActorConfig(chunk_period_s=chunk_period_s, seam=SeamMode(seam)),
        reasoning=reasoning,
        reasoning_period_s=reasoning_period_s,
        max_tokens=max_tokens,
        instruction='transfer the cube',
    )
    runtime = PolicyRuntime(
        timed, config, on_chunk=lambda chunk: run.arrivals_s.append(time.monotonic())
    )
    stop = threading.Event()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (*info.image_hw, 3), dtype=np.uint8) for _ in range(4)]

    def cameras():
        i = 0
        while not stop.wait(1 / 30):
            now = time.time_ns()
            for camera in info.cameras:
                runtime.assembler.add_image(camera, frames[i % len(frames)], now)
            runtime.assembler.add_joints(BIMANUAL_JOINTS, np.zeros(14), now)
            i += 1

    feeder = threading.Thread(target=cameras, name='bench-cameras', daemon=True)
    feeder.start()
    runtime.start()
    try:
        time.sleep(seconds)
    finally:
        runtime.stop()
        stop.set()
        feeder.join(5)
    return run


def _row(name: str, intervals: np.ndarray) -> dict:
    if len(intervals) == 0:
        return {'case': name, 'intervals': 0}
    p50, p99 = np.percentile(intervals, [50, 99])
    return {
        'case': name,
        'intervals': len(intervals),
        'p50_ms': round(p50 * 1e3, 1),
        'p99_ms': round(p99 * 1e3, 1),
        'max_ms': round(float(intervals.max()) * 1e3, 1),
    }


# -- `halo-ros bench-policy` -----------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument('--seconds', type=float, default=8.0, help='per case')
    parser.add_argument('--chunk-period', type=float, default=0.4, help='actor period (s)')
    parser.add_argument('--image-size', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'))
    parser.add_argument('--seam', default='none', choices=('none', 'hard', 'rtc'))
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--json', default=None)


def run(args) -> int:
    import torch

    from halo_ros.benchmarks import report
    from halo_ros.engine.loading import EngineConfig, load_engine

    torch.set_num_threads(args.threads)
    engine = load_engine(EngineConfig(image_hw=tuple(args.image_size)))
    common = dict(seconds=args.seconds, chunk_period_s=args.chunk_period, seam=args.seam)
    without = run_policy(engine, reasoning=False, **common)
    with_reasoning = run_policy(engine, reasoning=True, **common)
    spans = np.array([e - s for s, e in with_reasoning.reason_spans])
    rows = [
        _row('without reasoning', without.intervals()),
        _row('with reasoning (all)', with_reasoning.intervals()),
        _row(
            'with reasoning (overlapping a cycle)', with_reasoning.intervals(during_reasoning=True)
        ),
    ]
    print(
        f'halo-tiny (random weights), {args.image_size[0]}x{args.image_size[1]} x3 cameras, '
        f'actor period {args.chunk_period:g} s, seam {args.seam}, {len(spans)} reasoning cycles '
        f'(median {np.median(spans) * 1e3 if len(spans) else float("nan"):.0f} ms)'
    )
    report('bench-policy: chunk inter-arrival', rows, args.json)
    return 0
