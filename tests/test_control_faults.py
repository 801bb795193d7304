"""The faults a real ALOHA meets, through the control loop on four virtual Dynamixel arms (real
driver, real buses on ptys): angles across the +-pi seam, a wall clock that steps, re-syncs from
stale reads, a stalled loop, a serial port that vanishes and returns, oversized chunk streams,
following error. Each test failed before the fix it guards.
"""

import time
from dataclasses import replace

import numpy as np
import pytest
from control_helpers import START, offer, virtual_robot

from halo_ros.control.modes import Mode, Phase, Request
from halo_ros.drivers.aloha_arm import ArmState
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.joints import BIMANUAL_JOINTS

T0 = 1_700_000_000 * 1_000_000_000
DT = 20_000_000
LEFT_WAIST, LEFT_SHOULDER = 0, 1


def engage(loop, request, now_ns):
    pending = loop.request(request)
    record = loop.tick(now_ns)
    ok, message = pending.wait(0)
    assert ok, message
    return record


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout_s} s waiting for {what}'
        time.sleep(0.005)


def constant_chunk(pose, points=50):
    return np.tile(pose, (points, 1))


def test_the_policy_ramp_crosses_the_seam_the_short_way(tmp_path):
    # Held near -pi, the policy wants +3.12 on the waist: the same shaft angle give or take
    # 0.06 rad. A ramp on raw angles would sweep through 0 (~3 rad out and back).
    with virtual_robot(tmp_path, policy_ramp_s=1.0, watchdog_timeout_s=5.0) as (loop, arms, _):
        pose = START.copy()
        pose[0] = -3.10
        arms['follower_left'].place(pose)
        loop.prime()
        target = loop.follower_filter.last_command
        target[LEFT_WAIST] = 3.12
        engage(loop, Request.POLICY, T0)
        offer(loop, BIMANUAL_JOINTS, constant_chunk(target, 100), stamp_ns=T0, dt_ns=DT, seq=1)
        waist = [loop.tick(T0 + i * DT).command[LEFT_WAIST] for i in range(1, 60)]
    assert loop.phase is Phase.FOLLOWING_CHUNK
    assert min(waist) >= -3.14 - 1e-9 and max(waist) <= -3.10 + 1e-9, (min(waist), max(waist))


def test_teleop_alignment_compares_angles_across_the_seam(tmp_path):
    # Leader waist at +3.13, followers at -3.13: 0.02 rad apart on the shaft. Compared raw
    # (6.26 rad) the leaders never count as aligned and the switch times out into a fault.
    with virtual_robot(tmp_path, leader_align_timeout_s=4.0) as (loop, arms, _):
        follower, leader = START.copy(), START.copy()
        follower[0], leader[0] = -3.13, 3.13
        arms['follower_left'].place(follower)
        arms['leader_left'].place(leader)
        loop.prime()
        engage(loop, Request.TELEOP, T0)
        for i in range(1, 250):
            loop.tick(T0 + i * DT)
            if loop.phase is not Phase.ALIGNING_LEADERS:
                break
    assert loop.phase is Phase.TRACKING_LEADERS, (loop.phase, loop.stats.snapshot())


def test_a_wall_clock_step_neither_reverses_the_ramp_nor_blinds_the_watchdog(tmp_path):
    wall_offset = [0]

    def wall_ns():  # ROS time on a robot: the wall clock, which chrony may step
        return time.time_ns() + wall_offset[0]

    with virtual_robot(tmp_path, policy_ramp_s=1.0) as (loop, _, _):
        records = []
        loop.clock_ns, loop.on_tick = wall_ns, records.append
        target = loop.follower_filter.last_command
        target[LEFT_WAIST] += 0.6
        loop.start()
        ok, message = loop.request(Request.POLICY).wait(2.0)
        assert ok, message

        def feed(seconds, until=None):
            end = time.monotonic() + seconds
            while time.monotonic() < end and not (until and until()):
                stamp = wall_ns()
                offer(
                    loop,
                    BIMANUAL_JOINTS,
                    constant_chunk(target),
                    stamp_ns=stamp,
                    dt_ns=DT,
                    seq=int(time.monotonic_ns() // 1000),
                )
                time.sleep(0.08)

        ramped = lambda: (  # noqa: E731
            records
            and records[-1].phase is Phase.RAMPING
            and records[-1].command[LEFT_WAIST] > START[0] + 0.15
        )
        feed(10.0, until=ramped)
        assert ramped(), 'the ramp never got under way'
        wall_offset[0] -= 5_000_000_000  # the wall clock steps 5 s back, mid-ramp
        feed(0.6)
        last_chunk = time.monotonic()
        wait_for(lambda: loop.phase is Phase.WATCHDOG, 3.0, 'the watchdog after the step')
        watchdog_after_s = time.monotonic() - last_chunk
        loop.stop()
    waist = np.array([r.command[LEFT_WAIST] for r in records if r.mode is Mode.POLICY])
    assert np.diff(waist).min() >= -1e-9, f'the ramp went back by {-np.diff(waist).min():.3f} rad'
    assert watchdog_after_s < loop.config.watchdog_timeout_s + 1.0
    assert loop.stats.snapshot()['events']['clock_step'] == 1


class StaleReads:
    """From now on, the next `count` readings of one arm do not arrive (patches `arms.read`,
    which the loop and its collaborators share)."""

    def __init__(self, arms, name, count):
        self.count = count
        read = arms.read

        def stale_read():
            states = read()
            if self.count > 0:
                self.count -= 1
                states[name] = ArmState.stale('no status packet (injected)')
            return states

        arms.read = stale_read


def record_goals(arm):
    """Every Goal Position the servos of a simulated arm receive, as shaft angles (NaN where the
    servo is limp: a goal does not move it)."""
    goals, set_goal = [], arm.set_goal

    def spy(position_rad):
        goals.append(np.where(arm._torque, position_rad, np.nan))
        set_goal(position_rad)

    arm.set_goal = spy
    return goals


@pytest.mark.parametrize('request_kind', [Request.TORQUE_ON, Request.REBOOT])
def test_a_resync_waits_for_a_fresh_reading(tmp_path, request_kind):
    # The arm moves (limp, or a servo cut its torque and the joint fell) while its readings do
    # not arrive; then torque on / reboot: the first goal must be where the arm is now.
    with virtual_robot(tmp_path) as (loop, arms, buses):
        loop.tick(T0)
        if request_kind is Request.TORQUE_ON:
            pending = loop.request(Request.TORQUE_OFF)
            fallen = [0.0, 0.4, -0.3, 0, 0, 0, 0]
        else:
            buses[ArmName.FOLLOWER_LEFT].latch_error(2)  # the shoulder servo cuts its torque
            fallen = [0.0, -0.4, 0, 0, 0, 0, 0]
        loop.tick(T0 + DT)
        assert loop.phase in (Phase.TORQUE_OFF, Phase.FAULT), loop.phase
        stale = StaleReads(loop.arms, ArmName.FOLLOWER_LEFT, 6)
        loop.tick(T0 + 2 * DT)
        moved = arms['follower_left'].read().position_rad + fallen
        arms['follower_left'].move_by_hand(moved)
        loop.tick(T0 + 3 * DT)
        goals = record_goals(arms['follower_left'])
        pending = loop.request(request_kind)
        loop.tick(T0 + 4 * DT)
        ok, message = pending.wait(0)
        assert not ok and 'no fresh reading of' in message, message
        for i in range(5, 15):
            loop.tick(T0 + i * DT)
        assert stale.count == 0 and loop.mode is Mode.HOLD
    assert len(goals) > 5, 'the arm was never commanded again'
    # Whatever reached the servos holding torque from the request on was the pose the arm is in.
    worst = np.nanmax(np.abs(np.array(goals)[:, :6] - moved[:6]))
    assert worst < 0.02, f'a goal {worst:.2f} rad away from the measured pose'


def test_after_a_stall_the_goal_accelerates_from_the_measured_motion(tmp_path):
    with virtual_robot(tmp_path, policy_ramp_s=0.0, watchdog_timeout_s=10.0) as (loop, arms, _):
        base = loop.follower_filter.last_command
        ramp = base + 0.05 * np.arange(150)[:, None] * (np.arange(14) == LEFT_WAIST)  # 2.5 rad/s
        engage(loop, Request.POLICY, T0)
        offer(loop, BIMANUAL_JOINTS, ramp, stamp_ns=T0, dt_ns=DT, seq=1)
        commands = [loop.tick(T0 + i * DT).command for i in range(1, 30)]
        assert loop.follower_filter.velocity[LEFT_WAIST] == pytest.approx(2.5)
        # The loop stalls 200 ms; the servo reaches its last goal and stands there.
        wait_for(
            lambda: abs(arms['follower_left'].read().position_rad[0] - commands[-1][0]) < 1e-3,
            5.0,
            'the arm at its last goal',
        )
        after = loop.tick(T0 + 40 * DT).command
    a, dt = loop.limits.max_acceleration[LEFT_WAIST], loop.config.period_s
    step = after[LEFT_WAIST] - commands[-1][LEFT_WAIST]
    assert abs(step) <= a * dt * dt + 2e-3, f'{step:.3f} rad in the first tick from rest'
    assert loop.stats.snapshot()['events']['stall'] == 1


def test_a_serial_port_that_vanishes_and_returns(tmp_path):
    with virtual_robot(tmp_path) as (loop, arms, buses):
        base = loop.follower_filter.last_command
        goals = record_goals(arms['follower_left'])
        right = record_goals(arms['follower_right'])
        loop.tick(T0)
        buses[ArmName.FOLLOWER_LEFT].unplug()  # the USB adaptor is pulled
        records = [loop.tick(T0 + i * DT) for i in range(1, 6)]
        assert not any(r.states[ArmName.FOLLOWER_LEFT].fresh for r in records)
        assert all(r.states[ArmName.FOLLOWER_RIGHT].fresh for r in records)
        assert len(right) >= 5  # the other arms are read and written all along
        written = len(goals)
        buses[ArmName.FOLLOWER_LEFT].replug()
        tick = 6

        def fresh_again():
            nonlocal tick
            tick += 1
            return loop.tick(T0 + tick * DT).states[ArmName.FOLLOWER_LEFT].fresh

        wait_for(fresh_again, 10.0, 'the port back')
        for _ in range(3):
            tick += 1
            loop.tick(T0 + tick * DT)
        assert len(goals) > written, 'no goal written after the port came back'
        np.testing.assert_allclose(goals[-1][:6], base[:6], atol=0.01)
        stats = loop.stats.snapshot()
        assert stats['read_failures']['follower_left'] >= 5
        arm = loop.arms.arm_set.arms[ArmName.FOLLOWER_LEFT]
        assert arm.port_losses == 1 and arm.port_reopens == 1


def test_oversized_chunks_and_queues_are_refused_and_counted(tmp_path):
    with virtual_robot(tmp_path, max_chunk_points=100, max_queued_chunks=4) as (loop, _, _):
        base = loop.follower_filter.last_command
        assert not offer(loop, BIMANUAL_JOINTS, constant_chunk(base, 101), stamp_ns=T0, dt_ns=DT)
        for seq in range(10):  # the loop is not ticking meanwhile (a stall)
            assert offer(
                loop, BIMANUAL_JOINTS, constant_chunk(base), stamp_ns=T0, dt_ns=DT, seq=seq
            )
        huge = replace(loop._inbox[-1], positions=constant_chunk(base, 10_000))
        assert not loop.submit_chunk(huge)
        engage(loop, Request.POLICY, T0)
        rejections = loop.stats.snapshot()['rejections']
    assert rejections == {'too_long': 2, 'queue_full': 6}


def test_a_joint_that_cannot_follow_holds_the_arm_and_is_reported(tmp_path):
    tolerances = dict(path_tolerance_rad=(0.3,) * 6, following_error_ticks=3)
    with virtual_robot(tmp_path, policy_ramp_s=0.2, watchdog_timeout_s=5.0, **tolerances) as (
        loop,
        arms,
        _,
    ):
        records = []
        loop.on_tick = records.append
        blocked = arms['follower_left']
        advance = blocked._advance

        def shoulder_blocked():  # something holds the left shoulder where it is
            position = blocked._position[1]
            advance()
            blocked._position[1], blocked._velocity[1] = position, 0.0

        blocked._advance = shoulder_blocked
        target = loop.follower_filter.last_command
        target[LEFT_SHOULDER] += 0.8
        loop.start()
        assert loop.request(Request.POLICY).wait(2.0)[0]
        offer(loop, BIMANUAL_JOINTS, constant_chunk(target), stamp_ns=time.time_ns(), dt_ns=DT)
        wait_for(lambda: loop.phase is Phase.FAULT, 10.0, 'the following error hold')
        loop.stop()
        measured = blocked.read().position_rad
    stats = loop.stats.snapshot()
    assert stats['following_errors'] == {'left_shoulder': 1}
    assert stats['last_following_error'].startswith('left_shoulder')
    # Held at the measured pose: the command comes back to where the blocked joint is.
    fault = next(i for i, r in enumerate(records) if r.phase is Phase.FAULT)
    assert max(r.command[LEFT_SHOULDER] for r in records[:fault]) > measured[1] + 0.3
    assert records[-1].command[LEFT_SHOULDER] == pytest.approx(measured[1], abs=0.01)
