"""The fault drills of `halo-ros soak-controller`, one by one, on the real graph: the simulator node
(MuJoCo, virtual buses) and the drill controller node in their own processes, watched through
ControllerGraph's observer as any subscriber would. Each injected fault must show on
/diagnostics: CRC errors as bus retries, an unplugged bus as a port loss and a reopen, a stepped
clock as a clock step. Plus the pure pieces of the soak and the benchmark."""

import argparse
import os
import threading
import time

import numpy as np
import pytest

from halo_ros.control import bench, soak
from halo_ros.control.audit import landed_on, violations
from halo_ros.control.config import load_config
from halo_ros.control.graph import ControllerGraph
from halo_ros.drivers import aloha_calibration
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus import KinematicArm, VirtualBus, start_virtual_buses


def _fifo_allowed() -> bool:
    """Can this process make a thread SCHED_FIFO (root, CAP_SYS_NICE or an rtprio limit)?"""
    allowed = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            allowed.append(True)
        except OSError:
            allowed.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return allowed[0]


def _count(graph: ControllerGraph, prefix: str) -> float:
    return sum(float(v) for k, v in graph.diagnostics.items() if k.startswith(prefix))


@pytest.mark.ros
def test_each_drill_is_counted_on_diagnostics(tmp_path):
    graph = ControllerGraph(
        str(tmp_path),
        camera_size=(64, 48),
        policy=False,
        sim_params={'bus_corrupt_probability': 0.05, 'camera_rate_hz': 5.0},
        controller_module='halo_ros.nodes.drill_controller_node',
    ).start()
    try:
        graph.wait_ready(chunks=False)
        assert graph.spin(5, lambda: 'realtime.fifo_priority' in graph.diagnostics)
        fifo = load_config().realtime_priority if _fifo_allowed() else 0
        assert graph.diagnostics['realtime.fifo_priority'] == str(fifo)
        # 5 % of the replies with a broken CRC: retried by the driver and counted per arm.
        assert graph.spin(30, lambda: _count(graph, 'bus_retries.') >= 5), graph.diagnostics
        assert all(float(graph.diagnostics[f'bus_retries.{arm}']) > 0 for arm in _ARMS)

        # A bus unplugged at run time: its pty vanishes, the controller loses the port ...
        assert graph.set_parameter('sim', 'unplugged_buses', ['follower_left'])
        assert graph.spin(15, lambda: _count(graph, 'port_losses.follower_left') >= 1)
        assert _count(graph, 'port_reopens.follower_left') == 0
        # ... and reopens it when the bus is plugged back in; the other arms never lost theirs.
        assert graph.set_parameter('sim', 'unplugged_buses', [''])
        assert graph.spin(20, lambda: _count(graph, 'port_reopens.follower_left') >= 1)
        assert _count(graph, 'port_losses.') == 1
        # Not an arm: refused with the reason, nothing unplugged.
        assert not graph.set_parameter('sim', 'unplugged_buses', ['follower_middle'])

        # The controller's ROS clock stepped back 2 s, then put right: two steps counted.
        steps = _count(graph, 'events.clock_step')
        assert graph.set_parameter('controller', 'clock_offset_s', -2.0)
        assert graph.spin(10, lambda: _count(graph, 'events.clock_step') >= steps + 1)
        assert graph.set_parameter('controller', 'clock_offset_s', 0.0)
        assert graph.spin(10, lambda: _count(graph, 'events.clock_step') >= steps + 2)
        counters = {k: v for k, v in graph.diagnostics.items() if k.startswith(soak.FAULT_COUNTERS)}
        checks = soak.fault_checks(counters)
        assert not checks['policy kill counted (watchdog)']  # no policy here: none drilled
        assert all(v for k, v in checks.items() if 'policy' not in k), checks
    finally:
        codes = graph.close()
    log = (tmp_path / 'controller_node.log').read_text()
    assert codes == {'controller': 0, 'sim': 0}, log[-3000:]


_ARMS = ('follower_left', 'follower_right', 'leader_left', 'leader_right')


def test_fault_checks_need_every_drill_counted():
    counted = {
        'bus_retries.follower_left': '12',
        'port_losses.follower_left': '1',
        'port_reopens.follower_left': '1',
        'events.watchdog': '2',
        'events.clock_step': '2',
    }
    assert all(soak.fault_checks(counted).values())
    for key, failed in (
        ('bus_retries.follower_left', 'CRC errors retried and counted'),
        ('port_reopens.follower_left', 'port loss counted'),
        ('events.watchdog', 'policy kill counted (watchdog)'),
    ):
        checks = soak.fault_checks({**counted, key: '0'})
        assert [k for k, v in checks.items() if not v] == [failed]
    one_step = soak.fault_checks({**counted, 'events.clock_step': '1'})  # back, never put right
    assert not one_step['clock steps counted']


def _bench_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(flags))


def test_bench_switches_each_realtime_measure_off_alone_or_all_with_bare():
    assert bench._measures(_bench_args()) == {'controller': {}, 'bus_reply_priority': 50}
    assert bench._measures(_bench_args('--no-fifo'))['controller'] == {'realtime_priority': 0}
    assert bench._measures(_bench_args('--no-gc'))['controller'] == {'gc_in_slack': False}
    bare = bench._measures(_bench_args('--bare', '--bus-priority', '30'))
    assert bare == {
        'controller': {
            'realtime_priority': 0,
            'lock_memory': False,
            'gc_in_slack': False,
            'switch_interval_ms': 0.0,
        },
        'bus_reply_priority': 0,
    }


def test_soak_refuses_arguments_it_cannot_run():
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    for flags, word in (
        (['--minutes', '0'], 'minutes'),
        (['--corrupt', '1.5'], 'corrupt'),
        (['--unplug-s', '-1'], 'unplug'),
        (['--clock-step-s', '0'], 'clock-step'),
    ):
        with pytest.raises(ValueError, match=word):
            soak.validate(parser.parse_args(flags))


def test_virtual_buses_reply_from_sched_fifo_threads_at_the_priority_asked(tmp_path):
    with pytest.raises(ValueError, match='reply_priority'):
        VirtualBus(KinematicArm('follower_left'), None, reply_priority=100)
    robot = aloha_calibration.load(
        calibration_file('sim_aloha.yaml'), environ={'HALO_ROS_RUN_DIR': str(tmp_path)}
    )
    arms = {name.value: KinematicArm(name.value) for name in aloha_calibration.ArmName}
    buses = start_virtual_buses(arms, robot, reply_priority=20)
    try:
        expected = (os.SCHED_FIFO, 20) if _fifo_allowed() else (os.SCHED_OTHER, 0)

        def policies():
            ids = [bus._thread.native_id for bus in buses.values()]
            return [(os.sched_getscheduler(i), os.sched_getparam(i).sched_priority) for i in ids]

        deadline = time.monotonic() + 5
        while policies() != [expected] * 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert policies() == [expected] * 4
    finally:
        for bus in buses.values():
            bus.stop()


def test_audit_lets_a_resync_onto_the_measured_pose_pass_and_nothing_else():
    """A hold on a following error puts the command where the arm is: a step of 0.4 rad in one
    tick, but onto the measurement. Anywhere else, the same step is a violation."""
    config = load_config()
    robot = aloha_calibration.load(calibration_file(config.calibration))
    limits = config.follower_limits(robot)
    period = config.period_ns
    commands = np.zeros((40, 14))
    commands[:20, 1] = np.arange(20) * 0.02  # the shoulder at 1 rad/s, well inside the limits
    commands[20:, 1] = commands[19, 1] - 0.4  # the hold: 0.4 rad back in one tick, then still
    stamps = np.arange(40) * period
    measured = commands.copy()
    measured[:20, 1] -= 0.4  # the arm lagged 0.4 rad behind: the hold lands on it
    assert {v.kind for v in violations(commands, stamps, limits, period)} == {
        'velocity',
        'acceleration',
    }
    in_fault = (np.arange(40) >= 20)[:, None]
    resynced = in_fault & landed_on(commands, measured, limits, period)
    assert violations(commands, stamps, limits, period, resynced=resynced) == []
    elsewhere = measured.copy()
    elsewhere[20:, 1] += 0.3  # the arm was not where the command went
    resynced = in_fault & landed_on(commands, elsewhere, limits, period)
    found = violations(commands, stamps, limits, period, resynced=resynced)
    assert [(v.tick, v.joint, v.kind) for v in found][:1] == [(20, 'left_shoulder', 'velocity')]
    with pytest.raises(ValueError, match='resynced'):
        violations(commands, stamps, limits, period, resynced=resynced[:, :7])
