"""`halo-ros up sim --duration 20`: starts, reaches ready, publishes the graph's topics, survives a
killed policy (restarted) and shuts down cleanly with exit 0."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from halo_ros.bringup.profiles import profile
from halo_ros.bringup.supervise import installed

pytestmark = pytest.mark.ros

CAMERA_TOPICS = [
    f'{c}/{s}'
    for c in ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
    for s in ('image_raw', 'camera_info')
]
SIM_TOPICS = ['sim/status', 'sim/reward', 'sim/success', 'sim/joint_states']
POLICY_TOPICS = ['halo/action_chunk', 'halo/reasoning', 'halo/subgoal/image_raw', 'diagnostics']
CONTROLLER_TOPICS = [
    'follower_left/joint_states',
    'follower_right/joint_states',
    'leader_left/joint_states',
    'leader_right/joint_states',
    'halo/command',
    'halo/control_state',
    'halo/mode',
]


class _Output:
    """Collects a child's stdout lines on a thread, so waits can time out."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self._queue.put(line.rstrip('\n'))
        self._queue.put(None)

    def wait_for(self, marker: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if marker in line:
                return line
        raise AssertionError(f'no {marker!r} within {timeout_s:g} s; output:\n' + self.text())

    def drain(self) -> None:
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)

    def text(self) -> str:
        return '\n'.join(self.lines)


def _up(run_dir, *extra):
    process = subprocess.Popen(
        [sys.executable, '-m', 'halo_ros.cli', 'up', 'sim', '--run-dir', str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parent.parent)},
    )
    return process, _Output(process.stdout)


def _finish(process, output):
    try:
        process.wait(90)
        output.drain()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)
    return output.text()


def _controller_present() -> bool:
    return installed(profile('sim').node('controller'))


@pytest.fixture(scope='module')
def up_sim_20s(tmp_path_factory):
    """One `halo-ros up sim --duration 20`: (exit code, output, summary.json, run dir)."""
    run_dir = tmp_path_factory.mktemp('up') / 'run'
    process, output = _up(run_dir, '--duration', '20')
    output.wait_for('ready after', 120)
    text = _finish(process, output)
    summary = json.loads((run_dir / 'summary.json').read_text())
    return process.returncode, text, summary, run_dir


def test_up_sim_for_20_s_publishes_the_graph_and_stops_cleanly(up_sim_20s):
    code, text, summary, run_dir = up_sim_20s
    assert code == 0, text
    assert 'stopped cleanly (duration reached)' in text
    assert summary['failure'] is None and summary['ready_s'] is not None
    logs = '\n'.join(f'--- {p.name}:\n' + p.read_text()[-3000:] for p in run_dir.glob('*.log'))
    assert set(summary['exit_codes'].values()) == {0}, f'{summary["exit_codes"]}\n{logs}'
    silent = [t for t in CAMERA_TOPICS + SIM_TOPICS + POLICY_TOPICS if not summary['topics'].get(t)]
    assert not silent, f'nothing arrived on {silent}'
    assert (run_dir / 'sim.log').is_file() and (run_dir / 'policy.log').is_file()


def test_up_sim_runs_the_controller_and_holds_before_stopping(up_sim_20s):
    if not _controller_present():
        pytest.skip(
            'controller_node is not in this checkout: its topics (joint states of the four arms, '
            'halo/command, halo/control_state, halo/mode) and ~/hold are not checked by `up sim`'
        )
    code, text, summary, _ = up_sim_20s
    assert summary['absent'] == [] and summary['exit_codes']['controller'] == 0, text
    silent = [t for t in CONTROLLER_TOPICS if not summary['topics'].get(t)]
    assert not silent, f'nothing arrived on {silent}'
    assert '/controller/hold: ' in text, 'the arms must be put on hold before stopping'


def test_killed_policy_is_restarted_and_ctrl_c_stops_everything(tmp_path):
    import rclpy
    from ros_helpers import spin_until
    from trajectory_msgs.msg import JointTrajectory

    from halo_ros.nodes.conversions import ns_from_stamp
    from halo_ros.nodes.topic_monitor import TopicMonitor

    run_dir = tmp_path / 'up'
    process, output = _up(run_dir)
    rclpy.init()
    monitor = TopicMonitor({'halo/action_chunk': JointTrajectory}, 'restart_watch')
    try:
        output.wait_for('ready after', 120)
        before = json.loads((run_dir / 'processes.json').read_text())
        os.kill(before['policy'], signal.SIGKILL)  # a crash: the supervisor must restart it
        output.wait_for('policy restarted', 30)
        restarted_ns = time.time_ns()
        stats = monitor.stats['halo/action_chunk']
        spin_until(
            monitor,
            lambda: (
                stats.last is not None and ns_from_stamp(stats.last.header.stamp) > restarted_ns
            ),
            90,
            'a chunk from the restarted policy',
        )
        after = json.loads((run_dir / 'processes.json').read_text())
        assert after['policy'] != before['policy']
        assert after['sim'] == before['sim']
        if _controller_present():
            assert after['controller'] == before['controller'], 'the controller must outlive it'
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
        process.send_signal(signal.SIGINT)  # Ctrl-C
        text = _finish(process, output)
    assert process.returncode == 0, text
    assert 'stopped cleanly (Ctrl-C)' in text
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['restarts']['policy'] == 1 and summary['failure'] is None
    logs = '\n'.join(f'--- {p.name}:\n' + p.read_text()[-3000:] for p in run_dir.glob('*.log'))
    assert set(summary['exit_codes'].values()) == {0}, f'{summary["exit_codes"]}\n{logs}'
