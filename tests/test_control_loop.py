"""The control loop on four virtual Dynamixel arms (real driver, real buses on ptys), ROS-free.

Ticks are driven by hand with a synthetic clock where timing matters (chunk stamps, watchdog), so
the outcome does not depend on the load of the machine.
"""

import time
from collections import Counter

import numpy as np
import pytest
from control_helpers import (
    PERIOD_NS,
    START,
    assert_within_limits,
    offer,
    smooth_chunk,
    virtual_robot,
)

from halo_ros.control.modes import Mode, Phase, Request
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.dynamixel.tables import HardwareError
from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.sim.virtual_bus import FaultInjection

T0 = 1_700_000_000 * 1_000_000_000
DT = PERIOD_NS


def engage(loop, request, now_ns):
    pending = loop.request(request)
    record = loop.tick(now_ns)
    ok, message = pending.wait(0)
    assert ok, message
    return record


def test_adversarial_chunk_streams_never_break_the_limits_and_every_refusal_is_counted(tmp_path):
    rng = np.random.default_rng(7)
    with virtual_robot(tmp_path) as (loop, _, _):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        expected, commands, seq, epoch = Counter(), [], 0, 0
        names_missing = list(BIMANUAL_JOINTS[:-1])
        names_wrong = list(BIMANUAL_JOINTS[:-1]) + ['right_grip']
        for i in range(1, 400):
            now = T0 + i * DT
            stamp = now - 3 * DT  # 60 ms of inference latency
            if i % 5 == 1:  # a valid chunk every 100 ms, sometimes with a huge jump in it
                seq += 1
                if i % 100 == 1:
                    epoch += 1
                positions = smooth_chunk(base, (stamp - T0) / 1e9, amplitude=0.3)
                if i % 25 == 1:
                    positions[5:] += rng.choice([-1, 1], 14) * 5.0  # 5 rad jump, beyond limits
                assert offer(
                    loop, BIMANUAL_JOINTS, positions, stamp_ns=stamp, dt_ns=DT, epoch=epoch, seq=seq
                )
            elif i % 5 == 3:  # an adversarial one
                kind = (
                    'nan',
                    'missing',
                    'wrong',
                    'stale',
                    'old_seq',
                    'old_epoch',
                    'future',
                    'shape',
                )[(i // 5) % 8]
                positions = smooth_chunk(base, 0.0)
                timing = dict(stamp_ns=stamp, dt_ns=DT, epoch=epoch, seq=seq + 1000)
                if kind == 'nan':
                    positions[rng.integers(50), rng.integers(14)] = np.nan
                    expected['non_finite'] += 1
                elif kind == 'missing':
                    positions = positions[:, :13]
                    expected['unknown_joints'] += 1
                elif kind == 'wrong':
                    expected['unknown_joints'] += 1
                elif kind == 'stale':
                    timing['stamp_ns'] = now - 2_000_000_000
                    expected['stale'] += 1
                elif kind == 'old_seq':
                    timing['seq'] = seq - 1
                    expected['out_of_order'] += 1
                elif kind == 'old_epoch':
                    timing['epoch'] = epoch - 1
                    expected['old_epoch'] += 1
                elif kind == 'future':
                    timing['stamp_ns'] = now + 500 * 1_000_000
                    expected['future'] += 1
                else:
                    positions = positions[0]
                    expected['wrong_shape'] += 1
                names = {'missing': names_missing, 'wrong': names_wrong}.get(kind, BIMANUAL_JOINTS)
                assert not offer(loop, names, positions, **timing) or kind in (
                    'stale',
                    'old_seq',
                    'old_epoch',
                    'future',
                )
            record = loop.tick(now)
            assert record.mode is Mode.POLICY and record.phase in (
                Phase.RAMPING,
                Phase.FOLLOWING_CHUNK,
            )
            commands.append(record.command)
        stats = loop.stats.snapshot()
    assert stats['rejections'] == dict(expected)
    assert stats['limits_hit'].get('position', 0) > 0 and stats['limits_hit']['velocity'] > 0
    assert_within_limits(commands, loop.limits, 0.02)


def test_first_chunk_at_rest_starts_at_index_zero_and_later_ones_drop_executed_steps(tmp_path):
    with virtual_robot(tmp_path, policy_ramp_s=0.0) as (loop, _, _):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        positions = smooth_chunk(base, 0.0)
        offer(loop, BIMANUAL_JOINTS, positions, stamp_ns=T0 - 4 * DT, dt_ns=DT, seq=1)
        first = loop.tick(T0 + DT)
        assert first.chunk == (0, 1, 0.0)  # at rest: nothing was executed since its stamp
        for i in range(2, 6):
            loop.tick(T0 + i * DT)
        # Stamped 3 ticks ago, all 3 executed: it starts at index 3.
        offer(loop, BIMANUAL_JOINTS, positions, stamp_ns=T0 + 3 * DT, dt_ns=DT, seq=2)
        assert loop.tick(T0 + 6 * DT).chunk == (0, 2, 3.0)
        # A chunk at 40 ms intervals played at 20 ms: interpolated half-way points.
        offer(loop, BIMANUAL_JOINTS, positions, stamp_ns=T0 + 7 * DT, dt_ns=2 * DT, seq=3)
        assert loop.tick(T0 + 7 * DT).chunk == (0, 3, 0.0)
        assert loop.tick(T0 + 8 * DT).chunk == (0, 3, 0.5)


def test_stream_stops_mid_chunk_watchdog_holds_then_a_restarted_policy_resumes(tmp_path):
    with virtual_robot(tmp_path, policy_ramp_s=0.5) as (loop, _, _):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        commands, phases = [], []
        for i in range(1, 120):  # chunks every 100 ms until the "policy process" dies at 1 s
            now = T0 + i * DT
            if i % 5 == 0 and i <= 50:
                positions = smooth_chunk(base, (now - DT - T0) / 1e9, amplitude=0.4)
                offer(
                    loop,
                    BIMANUAL_JOINTS,
                    positions,
                    stamp_ns=now - DT,
                    dt_ns=DT,
                    epoch=3,
                    seq=40 + i,
                )
            record = loop.tick(now)
            commands.append(record.command)
            phases.append(record.phase)
        last_chunk_tick = 50
        timeout_ticks = round(loop.config.watchdog_timeout_s / 0.02)
        fired = phases.index(Phase.WATCHDOG) + 1
        # The watchdog fires on the first tick past the timeout, not one later.
        assert fired == last_chunk_tick + timeout_ticks + 1
        assert all(p is Phase.FOLLOWING_CHUNK for p in phases[last_chunk_tick : fired - 1])
        moving = np.abs(np.diff(commands, axis=0)).max(axis=1)
        assert moving[fired - 2] > 0  # it was moving when the watchdog fired
        assert moving[-10:].max() < 1e-9  # and it came to rest
        assert_within_limits(commands, loop.limits, 0.02)
        # A new policy process: epoch and seq start from 0 again; it is taken at once.
        now = T0 + 120 * DT
        positions = smooth_chunk(commands[-1], 0.0, amplitude=0.0)
        assert offer(loop, BIMANUAL_JOINTS, positions, stamp_ns=now - DT, dt_ns=DT, seq=0)
        record = loop.tick(now)
        assert record.phase is Phase.RAMPING and record.chunk == (0, 0, 0.0)
        assert loop.stats.snapshot()['events']['watchdog'] == 1


def test_a_chunk_that_runs_out_holds_its_last_action_before_the_watchdog(tmp_path):
    with virtual_robot(tmp_path, policy_ramp_s=0.0) as (loop, _, _):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        short = base + 0.002 * np.arange(5)[:, None]
        offer(loop, BIMANUAL_JOINTS, short, stamp_ns=T0, dt_ns=DT, seq=1)
        records = [loop.tick(T0 + i * DT) for i in range(1, 12)]
        assert [r.phase for r in records[:5]] == [Phase.FOLLOWING_CHUNK] * 5
        assert records[5].phase is Phase.CHUNK_DONE  # the tick after its last action
        np.testing.assert_allclose(records[-1].command, short[-1], atol=1e-9)


def test_estop_freezes_the_command_on_the_same_tick(tmp_path):
    with virtual_robot(tmp_path, watchdog_timeout_s=2.0) as (loop, _, _):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        offer(
            loop,
            BIMANUAL_JOINTS,
            base + 0.02 * np.arange(50)[:, None],
            stamp_ns=T0,
            dt_ns=DT,
            seq=1,
        )
        records = [loop.tick(T0 + i * DT) for i in range(1, 30)]
        assert np.abs(records[-1].command - records[-2].command).max() > 0.01  # moving fast
        pending = loop.request(Request.ESTOP)
        stopped = [loop.tick(T0 + i * DT) for i in range(30, 40)]
        assert pending.wait(0)[0] and stopped[0].mode is Mode.ESTOP
        for record in stopped:
            np.testing.assert_array_equal(record.command, records[-1].command)
        refused = loop.request(Request.POLICY)
        assert not refused.wait(0)[0] and 'ESTOP' in refused.wait(0)[1]


def test_teleop_handover_aligns_the_leaders_then_follows_them(tmp_path):
    with virtual_robot(tmp_path) as (loop, arms, _):
        follower_pose = START.copy()
        follower_pose[:6] += [0.3, 0.2, -0.2, 0.1, 0.2, -0.3]
        arms['follower_left'].place(follower_pose)
        arms['follower_right'].place(follower_pose)
        loop.prime()
        records = []
        loop.on_tick = records.append
        loop.start()
        ok, message = loop.request(Request.TELEOP).wait(2.0)
        assert ok, message
        deadline = time.monotonic() + 20
        while loop.phase is not Phase.TRACKING_LEADERS:
            assert time.monotonic() < deadline, f'leaders never aligned, phase {loop.phase}'
            time.sleep(0.02)
        leader = arms['leader_left'].read().position_rad
        np.testing.assert_allclose(leader[:6], follower_pose[:6], atol=0.04)
        moved = START.copy()
        moved[:6] += 0.15
        arms['leader_left'].move_by_hand(moved)  # limp now: the hand moves it
        deadline = time.monotonic() + 10
        while abs(loop.follower_filter.last_command[0] - moved[0]) > 1e-3:
            assert time.monotonic() < deadline, 'the follower did not follow the leader'
            time.sleep(0.02)
        loop.stop()
        commands = [r.command for r in records if r.command is not None]
        assert_within_limits(commands, loop.limits, 0.02)
        assert not any(r.intervention for r in records)  # from HOLD, not from POLICY


def test_latched_overload_is_reported_held_and_cleared_by_reboot(tmp_path):
    with virtual_robot(tmp_path) as (loop, arms, buses):
        loop.tick(T0)
        buses[ArmName.FOLLOWER_LEFT].latch_error(9, HardwareError.OVERLOAD)
        record = loop.tick(T0 + DT)
        assert record.mode is Mode.HOLD and record.phase is Phase.FAULT
        report = loop.stats.snapshot()['hardware_errors']
        assert report == {'follower_left': {9: repr(HardwareError.OVERLOAD)}}
        refused = loop.request(Request.POLICY).wait(0)
        assert not refused[0] and 'follower_left ID 9' in refused[1] and 'reboot' in refused[1]
        held = [loop.tick(T0 + i * DT).command for i in range(2, 6)]
        assert np.ptp(np.array(held), axis=0).max() == 0  # held still
        pending = loop.request(Request.REBOOT)
        loop.tick(T0 + 6 * DT)
        ok, message = pending.wait(0)
        assert ok, message
        assert 'follower_left' in message and loop.snapshot().faults == ''
        assert loop.arms.hardware_errors([ArmName.FOLLOWER_LEFT]) == {}
        assert loop.arms.torque_enabled(ArmName.FOLLOWER_LEFT)
        engage(loop, Request.POLICY, T0 + 7 * DT)  # allowed again
        assert loop.stats.snapshot()['events']['reboot'] == 1


@pytest.mark.parametrize('torque', ['hold', 'off'])
def test_estop_torque_follows_the_config(tmp_path, torque):
    with virtual_robot(tmp_path, estop_torque=torque) as (loop, _, _):
        loop.tick(T0)
        pending = loop.request(Request.ESTOP)
        record = loop.tick(T0 + DT)
        assert pending.wait(0)[0]
        assert loop.arms.torque_enabled(ArmName.FOLLOWER_RIGHT) == (torque == 'hold')
        assert (record.command is None) == (torque == 'off')
        if torque == 'off':
            assert not loop.request(Request.HOLD).wait(0)[0]  # torque first
            pending = loop.request(Request.TORQUE_ON)
            loop.tick(T0 + 2 * DT)
            assert pending.wait(0)[0]
        pending = loop.request(Request.HOLD)
        assert loop.tick(T0 + 3 * DT).mode is Mode.HOLD and pending.wait(0)[0]


def test_reads_that_fail_reuse_the_target_then_hold_after_too_many(tmp_path):
    with virtual_robot(tmp_path, max_consecutive_read_failures=3) as (loop, _, buses):
        base = loop.follower_filter.last_command
        engage(loop, Request.POLICY, T0)
        offer(loop, BIMANUAL_JOINTS, smooth_chunk(base, 0.0), stamp_ns=T0, dt_ns=DT, seq=1)
        loop.tick(T0 + DT)
        buses[ArmName.FOLLOWER_RIGHT].set_faults(FaultInjection(drop_probability=1.0))
        records = [loop.tick(T0 + i * DT) for i in range(2, 5)]
        assert [r.mode for r in records[:2]] == [Mode.POLICY] * 2  # one or two: carry on
        assert records[2].mode is Mode.HOLD and records[2].phase is Phase.FAULT
        assert not records[0].states[ArmName.FOLLOWER_RIGHT].fresh
        assert loop.stats.snapshot()['read_failures'] == {'follower_right': 3}
        buses[ArmName.FOLLOWER_RIGHT].set_faults(FaultInjection())
        assert loop.tick(T0 + 5 * DT).states[ArmName.FOLLOWER_RIGHT].fresh
        engage(loop, Request.POLICY, T0 + 6 * DT)  # no latched error: it may go on


def test_a_garbled_hardware_error_reading_does_not_stop_the_robot(tmp_path):
    with virtual_robot(tmp_path) as (loop, _, buses):
        readings = iter([{ArmName.FOLLOWER_LEFT: {1: HardwareError(189)}}, {}])
        loop.arms.hardware_errors = lambda names: next(readings)  # a late reply taken as this one
        record = loop.tick(T0)
        assert not loop.supervisor.check_alerts(record.states, force=True)
        assert loop.mode is Mode.HOLD and loop.phase is Phase.HOLDING and not loop.faults
        assert loop.stats.snapshot()['events']['unconfirmed_hardware_error'] == 1
