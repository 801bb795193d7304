"""What `halo-ros demo` (and `halo-ros collect`) print: figures and text from what the graph did.

ROS-free: the demo driver (`halo_ros.nodes.demo_driver`) collects the controller's ticks
(`ControlState`), the commands, the policy's reasoning (`ReasoningMessage`), the simulator's
status and a summary per topic into a `DemoRun`; everything here turns that into numbers
(`closed_loop.json`) and lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from halo_ros.control.control_state import ControlState
from halo_ros.joints import GRIPPER_INDICES
from halo_ros.runtime.reasoning_message import ReasoningMessage

ARM_JOINTS = [i for i in range(14) if i not in GRIPPER_INDICES]


@dataclass(frozen=True)
class TopicSummary:
    """What arrived on one topic: how many, how fast, and the image shapes (if images)."""

    count: int
    rate_hz: float
    shapes: frozenset[tuple[int, ...]] = frozenset()

    def shapes_text(self) -> str:
        return ' '.join('x'.join(map(str, shape)) for shape in sorted(self.shapes)) or '-'


@dataclass(frozen=True)
class DemoRun:
    """One demo: a teleoperated demonstration, then closed-loop episodes, then an intervention."""

    teleop: dict  # the simulator's status at the end of the demonstration
    episodes: list[dict]  # one `episode_result` per closed-loop episode
    intervention: list[ControlState]  # the ticks of the closing intervention
    topics: dict[str, TopicSummary]
    last_reasoning: ReasoningMessage | None
    latency_ms: dict[str, float]  # the policy's chunk latency percentiles (its diagnostics)

    @property
    def ok(self) -> bool:
        """Every closed-loop episode had the policy drive the arms."""
        return bool(self.episodes) and all(e['policy_ticks'] for e in self.episodes)

    def figures(self) -> dict:
        """`closed_loop.json`."""
        return {'teleop': self.teleop, 'episodes': self.episodes, 'latency_ms': self.latency_ms}


def latency_from_diagnostics(values: dict[str, str]) -> dict[str, float]:
    """{'stamp_to_publish_p50': ms, ...} from the policy's `latency_<name>_ms` diagnostics."""
    return {
        k.removeprefix('latency_').removesuffix('_ms'): float(v)
        for k, v in values.items()
        if k.startswith('latency_') and k.endswith('_ms')
    }


def subtasks(reasonings: Sequence[ReasoningMessage]) -> list[str]:
    """The subtasks the reasoning went through, in order (a repeat of the last one is dropped)."""
    out: list[str] = []
    for r in reasonings:
        if not out or out[-1] != r.subtask:
            out.append(r.subtask)
    return out


def seam_steps(ticks: Sequence[ControlState], commands: Sequence[tuple[int, np.ndarray]]) -> dict:
    """Per-tick arm-joint command steps, split into ticks where the executed chunk changed
    (a seam) and ticks inside one chunk: how smooth the hand-over between chunks is.
    `commands`: (stamp_ns, (14,) halo/command) per tick, matched to the ticks by stamp."""
    by_stamp = dict(commands)
    at_switch, within = [], []
    for before, after in zip(ticks[:-1], ticks[1:], strict=True):
        a, b = by_stamp.get(before.stamp_ns), by_stamp.get(after.stamp_ns)
        if a is None or b is None or before.chunk is None or after.chunk is None:
            continue
        step = float(np.abs(b[ARM_JOINTS] - a[ARM_JOINTS]).max())
        (at_switch if before.chunk.key != after.chunk.key else within).append(step)
    return {
        'seams': len(at_switch),
        'largest_step_at_switch_rad': round(max(at_switch, default=0.0), 4),
        'mean_step_at_switch_rad': round(float(np.mean(at_switch)) if at_switch else 0.0, 4),
        'largest_step_within_chunk_rad': round(max(within, default=0.0), 4),
        'mean_step_within_chunk_rad': round(float(np.mean(within)) if within else 0.0, 4),
    }


def episode_result(
    status: dict,
    *,
    max_reward: float,
    seconds_to_success: float | None,
    ticks: Sequence[ControlState],
    commands: Sequence[tuple[int, np.ndarray]],
    reasonings: Sequence[ReasoningMessage],
) -> dict:
    """One closed-loop episode's figures. `status`: the simulator's at its start (episode,
    seed); `ticks`/`commands`: those while the policy was engaged; `reasonings`: the accepted
    ones of its epoch."""
    return {
        'episode': status['episode'],
        'seed': status['seed'],
        'success': seconds_to_success is not None,
        'max_reward': max_reward,
        'seconds_to_success': None if seconds_to_success is None else round(seconds_to_success, 2),
        'policy_ticks': len(ticks),
        'chunks_executed': len({t.chunk.key for t in ticks if t.chunk is not None}),
        'phases': sorted({t.phase.value for t in ticks}),
        'subtasks': subtasks(reasonings),
        **seam_steps(ticks, commands),
    }


def teleop_outcome(status: dict) -> str:
    """'SUCCESS, reward 4/4' from the simulator's status at the end of a demonstration."""
    result = 'SUCCESS' if status['success'] else 'failure'
    return f'{result}, reward {status["reward"]}/{status["max_reward"]}'


def rate_rows(topics: dict[str, TopicSummary]) -> list[dict]:
    """The table of topic rates the demo starts its report with."""
    return [
        {
            'topic': topic,
            'messages': s.count,
            'rate_hz': round(s.rate_hz, 1),
            'shape': s.shapes_text(),
        }
        for topic, s in sorted(topics.items())
    ]


def report_lines(run: DemoRun, args) -> list[str]:
    """The demo's report after the rate table. `args`: the demo's options (checkpoint, backend,
    seam, instruction, episode_seconds)."""
    teleop = run.teleop
    lines = [
        f'teleoperated episode {teleop["episode"]} (seed {teleop["seed"]}): '
        + teleop_outcome(teleop)
    ]
    n = len(run.episodes)
    lines += [episode_line(k, n, e) for k, e in enumerate(run.episodes)]
    lines += policy_lines(run, args)
    lines.append(
        f'  intervention: {len(run.intervention)} ticks, intervention flag '
        f'{any(t.intervention for t in run.intervention)}'
    )
    return lines


def episode_line(k: int, n: int, e: dict) -> str:
    result = (
        f'SUCCESS in {e["seconds_to_success"]:.1f} s'
        if e['success']
        else f'failure (best reward {e["max_reward"]}/4)'
    )
    return (
        f'policy episode {k + 1}/{n} (seed {e["seed"]}): {result}; {e["chunks_executed"]} '
        f'chunks; reasoning went through {len(e["subtasks"])} subtasks; largest step at '
        f'chunk switches {e["largest_step_at_switch_rad"]:.3f} rad'
    )


def policy_lines(run: DemoRun, args) -> list[str]:
    episodes = run.episodes
    weights = args.checkpoint or 'RANDOM weights: its text, subgoals and actions are noise'
    successes = sum(e['success'] for e in episodes)
    lines = [
        f'\npolicy: halo-tiny on the CPU ({weights}), backend {args.backend}, seam '
        f'{args.seam}, instruction {args.instruction!r}',
        f'  closed loop: {successes}/{len(episodes)} episodes succeeded '
        f'({args.episode_seconds:g} s each at most); episodes reaching reward 1/2/3/4 '
        f'(right grasps / lifts / left touches / left holds it up): '
        + '/'.join(str(sum(e['max_reward'] >= r for e in episodes)) for r in (1, 2, 3, 4)),
    ]
    r = run.last_reasoning
    if r is not None:
        lines.append(
            f'  last reasoning v{r.context_version} ({r.latency_ms:.0f} ms): '
            f'{_shorten(r.text, 120)!r}'
        )
    for e in episodes[:1]:
        shown = [_shorten(t, 60) for t in e['subtasks'][:8]]
        lines.append(f'  subtasks reasoned in episode {e["episode"]}: {shown}')
    subgoals = run.topics.get('halo/subgoal/image_raw', TopicSummary(0, 0.0))
    shapes = ', '.join('x'.join(map(str, s)) for s in sorted(subgoals.shapes)) or '-'
    lines.append(f'  subgoal images: {subgoals.count} ({shapes})')
    chunks = run.topics.get('halo/action_chunk', TopicSummary(0, 0.0))
    lines.append(f'  action chunks: {chunks.count} at {chunks.rate_hz:.1f} Hz')
    if run.latency_ms:
        lines.append(
            f'  chunk latency (observation -> published): p50 '
            f'{run.latency_ms.get("stamp_to_publish_p50")} ms, p99 '
            f'{run.latency_ms.get("stamp_to_publish_p99")} ms'
        )
    if episodes:
        at_switch = max(e['largest_step_at_switch_rad'] for e in episodes)
        within = max(e['largest_step_within_chunk_rad'] for e in episodes)
        lines.append(
            f'  seams: largest per-tick joint step at chunk switches {at_switch:.3f} rad, '
            f'within chunks {within:.3f} rad'
        )
    return lines


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + '...'
