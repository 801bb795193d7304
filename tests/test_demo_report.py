"""What `halo-ros demo` prints, from what the graph did (ROS-free: `halo_ros.demo_report`)."""

import argparse
import time

import numpy as np
import pytest

from halo_ros.control.control_state import ChunkPosition, ControlState
from halo_ros.control.modes import Mode, Phase
from halo_ros.demo_report import (
    DemoRun,
    TopicSummary,
    episode_result,
    latency_from_diagnostics,
    rate_rows,
    report_lines,
    seam_steps,
)
from halo_ros.runtime.reasoning_message import ReasoningMessage
from halo_ros.supervisor import WaitError, Watch

ARGS = argparse.Namespace(
    checkpoint='models/halo-tiny-transfer-cube',
    backend='torch',
    seam='prefix',
    instruction='transfer the cube to the other arm',
    episode_seconds=10.0,
)


def _tick(k: int, chunk: tuple[int, int] | None, phase=Phase.FOLLOWING_CHUNK, **changes):
    fields = dict(
        tick=k,
        stamp_ns=1000 + k,
        mode=Mode.POLICY,
        phase=phase,
        intervention=False,
        chunk=None if chunk is None else ChunkPosition(*chunk, 0.0),
        limits=(),
        period_error_ms=0.0,
        tick_ms=1.0,
    )
    return ControlState(**(fields | changes))


def _reasoning(subtask: str, version: int = 0, text: str = '') -> ReasoningMessage:
    return ReasoningMessage(
        plan='',
        subtask=subtask,
        movement='',
        object='',
        text=text or f'<|subtask|>{subtask}',
        instruction=ARGS.instruction,
        context_version=version,
        epoch=1,
        accepted=True,
        observation_stamp_ns=0,
        latency_ms=812.4,
    )


def _command(*arm_values: float, gripper: float = 0.0) -> np.ndarray:
    q = np.zeros(14)
    q[[0, 7]] = arm_values  # a joint of each arm
    q[[6, 13]] = gripper
    return q


def test_seam_steps_split_command_steps_at_chunk_switches_from_steps_within_chunks():
    ticks = [_tick(0, (1, 0)), _tick(1, (1, 0)), _tick(2, (1, 1)), _tick(3, None), _tick(4, (1, 1))]
    commands = [
        (1000, _command(0.0, 0.0)),
        (1001, _command(0.01, 0.0, gripper=0.9)),  # a gripper step is not an arm step
        (1002, _command(0.01, 0.05)),  # the switch to seq 1
        (1003, _command(0.5, 0.5)),  # no chunk executing: skipped on both sides
        (1004, _command(0.5, 0.52)),
    ]
    steps = seam_steps(ticks, commands)
    assert steps == {
        'seams': 1,
        'largest_step_at_switch_rad': 0.05,
        'mean_step_at_switch_rad': 0.05,
        'largest_step_within_chunk_rad': 0.01,
        'mean_step_within_chunk_rad': 0.01,
    }
    assert seam_steps(ticks, commands[:1])['seams'] == 0  # ticks without a command are skipped


def test_an_episode_result_counts_chunks_phases_and_subtasks():
    ticks = [_tick(0, None, Phase.RAMPING), _tick(1, (2, 5)), _tick(2, (2, 6)), _tick(3, (2, 5))]
    reasonings = [_reasoning('reach'), _reasoning('reach', 1), _reasoning('grasp', 2)]
    result = episode_result(
        {'episode': 4, 'seed': 9, 'tick': 0},
        max_reward=3,
        seconds_to_success=None,
        ticks=ticks,
        commands=[],
        reasonings=reasonings,
    )
    assert result['policy_ticks'] == 4 and result['chunks_executed'] == 2
    assert result['phases'] == ['following_chunk', 'ramping']
    assert result['subtasks'] == ['reach', 'grasp']
    assert result['success'] is False and result['seconds_to_success'] is None


def _run(**changes) -> DemoRun:
    success = episode_result(
        {'episode': 2, 'seed': 5},
        max_reward=4,
        seconds_to_success=3.214,
        ticks=[_tick(0, (1, 0)), _tick(1, (1, 1))],
        commands=[(1000, _command(0.0, 0.0)), (1001, _command(0.02, 0.0))],
        reasonings=[_reasoning('x' * 70)],
    )
    failure = success | {'episode': 3, 'seed': 6, 'success': False, 'max_reward': 2}
    fields = dict(
        teleop={'episode': 1, 'seed': 3, 'success': True, 'reward': 4, 'max_reward': 4},
        episodes=[success, failure],
        intervention=[_tick(0, None, Phase.ALIGNING_LEADERS, intervention=True)] * 3,
        topics={
            'halo/action_chunk': TopicSummary(40, 4.04),
            'halo/subgoal/image_raw': TopicSummary(3, 1.0, frozenset({(64, 64, 3)})),
        },
        last_reasoning=_reasoning('grasp', 7, text='t' * 130),
        latency_ms={'stamp_to_publish_p50': 180.0, 'stamp_to_publish_p99': 420.5},
    )
    return DemoRun(**(fields | changes))


def test_the_report_lines_say_what_happened():
    lines = report_lines(_run(), ARGS)
    assert lines[0] == 'teleoperated episode 1 (seed 3): SUCCESS, reward 4/4'
    assert lines[1] == (
        'policy episode 1/2 (seed 5): SUCCESS in 3.2 s; 2 chunks; reasoning went through 1 '
        'subtasks; largest step at chunk switches 0.020 rad'
    )
    assert lines[2].startswith('policy episode 2/2 (seed 6): failure (best reward 2/4)')
    text = '\n'.join(lines)
    assert 'closed loop: 1/2 episodes succeeded (10 s each at most)' in text
    assert 'left holds it up): 2/2/1/1' in text  # episodes reaching reward 1/2/3/4
    assert f"last reasoning v7 (812 ms): '{'t' * 117}...'" in text
    assert f"subtasks reasoned in episode 2: ['{'x' * 57}...']" in text
    assert 'subgoal images: 3 (64x64x3)' in text and 'action chunks: 40 at 4.0 Hz' in text
    assert 'p50 180.0 ms, p99 420.5 ms' in text
    assert lines[-1] == '  intervention: 3 ticks, intervention flag True'


def test_a_run_without_reasoning_latency_or_episodes_still_reports():
    run = _run(episodes=[], last_reasoning=None, latency_ms={}, topics={}, intervention=[])
    text = '\n'.join(report_lines(run, argparse.Namespace(**vars(ARGS) | {'checkpoint': ''})))
    assert 'RANDOM weights' in text and 'closed loop: 0/0 episodes' in text
    assert 'last reasoning' not in text and 'chunk latency' not in text and 'seams:' not in text
    assert 'subgoal images: 0 (-)' in text
    assert not run.ok and _run().ok


def test_rates_and_latency_figures():
    rows = rate_rows({'b': TopicSummary(5, 2.04), 'a': TopicSummary(1, 0.0, frozenset({(2, 3)}))})
    assert rows == [
        {'topic': 'a', 'messages': 1, 'rate_hz': 0.0, 'shape': '2x3'},
        {'topic': 'b', 'messages': 5, 'rate_hz': 2.0, 'shape': '-'},
    ]
    values = {'latency_stamp_to_publish_p50_ms': '181.5', 'chunks': '12', 'latency_x': '1'}
    assert latency_from_diagnostics(values) == {'stamp_to_publish_p50': 181.5}
    assert _run().figures().keys() == {'teleop', 'episodes', 'latency_ms'}


class _Process:
    def __init__(self, running: bool):
        self.running = running


def test_a_watch_gives_up_past_its_deadline_or_when_a_process_exits():
    Watch.for_seconds(10, {'sim': _Process(True)}).check('anything')
    with pytest.raises(WaitError, match='timed out waiting for the reply'):
        Watch(time.monotonic() - 1).check('the reply')
    with pytest.raises(WaitError, match='the policy process exited .* waiting for a chunk'):
        Watch.for_seconds(10, {'sim': _Process(True), 'policy': _Process(False)}).check('a chunk')
