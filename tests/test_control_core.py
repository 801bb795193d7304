"""Controller core without ROS: chunk alignment and replacement, the safety filter."""

import numpy as np
import pytest

from halo_ros.control.chunks import ChunkBuffer, ChunkError, Rejection, make_chunk
from halo_ros.control.safety import JointLimits, Limit, SafetyFilter
from halo_ros.joints import BIMANUAL_JOINTS

MS = 1_000_000
DT = 20 * MS


def chunk(start_value=0.0, *, stamp_ns=0, points=10, epoch=0, seq=0, dt_ns=DT, names=None):
    positions = start_value + np.arange(points)[:, None] * np.ones((points, 14)) * 0.01
    return make_chunk(
        names or BIMANUAL_JOINTS, positions, stamp_ns=stamp_ns, dt_ns=dt_ns, epoch=epoch, seq=seq
    )


def limits(**overrides):
    values = dict(
        lower=-np.ones(14) * 2,
        upper=np.ones(14) * 2,
        max_velocity=np.ones(14) * 2.0,
        max_acceleration=np.ones(14) * 20.0,
    )
    values.update(overrides)
    return JointLimits(**values)


def test_a_robot_at_rest_starts_at_index_zero_then_drops_what_it_executed():
    buffer = ChunkBuffer(DT)
    assert buffer.offer(chunk(stamp_ns=0), now_ns=3 * DT) == 0  # 60 ms late, nothing executed
    for k in range(4):
        np.testing.assert_allclose(buffer.step((3 + k) * DT).target, np.full(14, 0.01 * k))
    # Stamped at 5 DT, arriving at 7 DT: 2 steps elapsed and 2 executed since -> index 2.
    assert buffer.offer(chunk(1.0, stamp_ns=5 * DT, seq=1), now_ns=7 * DT) == 2
    assert buffer.consumed_since(5 * DT) == 2
    played = buffer.step(7 * DT)
    assert played.index == 2 and played.chunk.seq == 1
    np.testing.assert_allclose(played.target, np.full(14, 1.02))


def test_after_the_last_action_the_buffer_holds_it():
    buffer = ChunkBuffer(DT)
    buffer.offer(chunk(stamp_ns=0, points=3), now_ns=0)
    assert [buffer.step(k * DT).index for k in range(3)] == [0, 1, 2]
    assert buffer.step(3 * DT) is None
    np.testing.assert_allclose(buffer.last_action, np.full(14, 0.02))


def test_chunk_period_different_from_control_period_is_interpolated():
    buffer = ChunkBuffer(DT)
    buffer.offer(chunk(stamp_ns=0, dt_ns=50 * MS), now_ns=0)
    buffer.step(0)
    np.testing.assert_allclose(buffer.step(DT).target, np.full(14, 0.004))


def test_joint_order_is_normalised_and_unknown_names_are_rejected():
    names = list(reversed(BIMANUAL_JOINTS))
    positions = np.tile(np.arange(14.0)[::-1], (3, 1))
    c = make_chunk(names, positions, stamp_ns=0, dt_ns=DT)
    np.testing.assert_array_equal(c.positions[0], np.arange(14.0))
    bad = list(BIMANUAL_JOINTS)
    bad[3] = 'left_elbow_typo'
    with pytest.raises(ChunkError) as e:
        make_chunk(bad, positions, stamp_ns=0, dt_ns=DT)
    assert e.value.reason is Rejection.UNKNOWN_JOINTS and 'left_elbow_typo' in str(e.value)


@pytest.mark.parametrize(
    'positions,dt,reason',
    [
        (np.full((5, 14), np.nan), DT, Rejection.NON_FINITE),
        (np.zeros((5, 13)), DT, Rejection.WRONG_SHAPE),
        (np.zeros(14), DT, Rejection.WRONG_SHAPE),
        (np.zeros((0, 14)), DT, Rejection.BAD_TIMING),
        (np.zeros((5, 14)), 0, Rejection.BAD_TIMING),
    ],
)
def test_malformed_chunks_are_rejected_with_a_reason(positions, dt, reason):
    with pytest.raises(ChunkError) as e:
        make_chunk(BIMANUAL_JOINTS, positions, stamp_ns=0, dt_ns=dt)
    assert e.value.reason is reason


def test_stale_future_out_of_order_and_old_epoch_chunks_are_refused():
    buffer = ChunkBuffer(DT, max_age_ns=1000 * MS, max_future_ns=50 * MS)
    for bad, now, reason in (
        (chunk(stamp_ns=0), 20 * DT, Rejection.STALE),  # every point in the past
        (chunk(stamp_ns=0, points=100), 60 * DT, Rejection.STALE),  # observation 1.2 s old
        (chunk(stamp_ns=10 * DT), 0, Rejection.FUTURE),
    ):
        with pytest.raises(ChunkError) as e:
            buffer.offer(bad, now_ns=now)
        assert e.value.reason is reason
    buffer.offer(chunk(stamp_ns=10 * DT, seq=5, epoch=1), now_ns=11 * DT)
    for bad, reason in (
        (chunk(stamp_ns=9 * DT, seq=6, epoch=1), Rejection.OUT_OF_ORDER),
        (chunk(stamp_ns=11 * DT, seq=4, epoch=1), Rejection.OUT_OF_ORDER),
        (chunk(stamp_ns=11 * DT, seq=9, epoch=0), Rejection.OLD_EPOCH),
    ):
        with pytest.raises(ChunkError) as e:
            buffer.offer(bad, now_ns=11 * DT)
        assert e.value.reason is reason
    # A newer epoch replaces the current chunk even with a lower sequence number.
    buffer.offer(chunk(1.0, stamp_ns=11 * DT, seq=0, epoch=2), now_ns=11 * DT)
    np.testing.assert_allclose(buffer.step(11 * DT).target, np.full(14, 1.0))
    # After the watchdog, a restarted policy (epoch 0, seq 0) is a new stream.
    buffer.forget_stream()
    assert buffer.offer(chunk(stamp_ns=12 * DT, seq=0, epoch=0), now_ns=12 * DT) == 0


def test_safety_filter_enforces_velocity_and_acceleration_per_tick():
    dt = 0.02
    lim = limits()
    f = SafetyFilter(lim, dt)
    f.reset(np.zeros(14))
    commands, velocities = [np.zeros(14)], [np.zeros(14)]
    for _ in range(100):
        result = f.filter(np.full(14, 1.5))  # a huge jump
        velocities.append((result.command - commands[-1]) / dt)
        commands.append(result.command)
    v, a = np.array(velocities), np.diff(np.array(velocities), axis=0) / dt
    assert np.abs(v).max() <= lim.max_velocity[0] + 1e-9
    assert np.abs(a).max() <= lim.max_acceleration[0] + 1e-6
    np.testing.assert_allclose(commands[-1], 1.5, atol=1e-6)  # it gets there, no overshoot
    assert max(c.max() for c in commands) <= 1.5 + 1e-9


def test_safety_filter_clamps_position_and_never_passes_nan():
    f = SafetyFilter(limits(), 0.02)
    f.reset(np.full(14, 1.99))
    result = f.filter(np.full(14, 5.0))
    assert Limit.POSITION in result.limited and result.command.max() <= 2.0
    held = f.filter(np.full(14, np.nan))
    assert Limit.NON_FINITE in held.limited and np.isfinite(held.command).all()


def test_a_full_turn_joint_goes_to_the_nearest_equivalent_angle():
    # Joint 3 spans a whole turn (+-3.14): -3.13 is where +3.13 + 0.02 rad lies, so an arm at
    # +3.13 told -3.13 must not turn all the way round; joint 1 (+-2) moves to its target.
    lower, upper = -np.ones(14) * 2, np.ones(14) * 2
    lower[3], upper[3] = -3.14, 3.14
    f = SafetyFilter(limits(lower=lower, upper=upper), 0.02)
    start = np.zeros(14)
    start[[1, 3]] = -1.5, 3.13
    f.reset(start)
    target = start.copy()
    target[[1, 3]] = 1.5, -3.13
    for _ in range(100):
        command = f.filter(target).command
    assert command[1] == pytest.approx(1.5)
    assert 3.13 <= command[3] <= 3.14  # the equivalent angle, clipped at the limit
    target[3] = -1.0  # a real move: the short way round is back through zero
    for _ in range(200):
        command = f.filter(target).command
    assert command[3] == pytest.approx(-1.0)


def fast_filter(start):
    f = SafetyFilter(
        limits(max_velocity=np.ones(14) * 50, max_acceleration=np.ones(14) * 1e5), 0.02
    )
    f.reset(np.full(14, start))
    return f


def grippers(left, right):
    target = np.full(14, 0.4)
    target[[6, 13]] = left, right
    return target


def test_gripper_stops_closing_past_its_current_limit():
    # Closing on an object at 0.45: the goal has already passed it (0.4), the current is high.
    f = fast_filter(0.4)
    result = f.filter(
        grippers(0.0, 0.0),
        gripper_effort_ma=np.array([900.0, 10.0]),
        gripper_position=np.array([0.45, 0.45]),
    )
    assert Limit.GRIPPER_CURRENT in result.limited
    assert result.command[6] == pytest.approx(0.45)  # held where it touches
    assert result.command[13] < 0.4  # the other gripper is free to close


def test_a_gripper_holding_a_squeeze_is_relieved_too():
    # Closed (target = command = 0) on an object that holds the fingers at 0.3: no closing motion,
    # but the current stays over the limit -- the overload latches unless the goal gives way.
    f = fast_filter(0.0)
    squeezing = dict(
        gripper_effort_ma=np.array([900.0, 10.0]), gripper_position=np.array([0.3, 0.3])
    )
    result = f.filter(grippers(0.0, 0.0), **squeezing)
    assert Limit.GRIPPER_CURRENT in result.limited
    assert result.command[6] == pytest.approx(0.3)  # the goal moved to where the gripper is
    assert result.command[13] == pytest.approx(0.0)  # no current: the other squeezes on
    # Opening away from the object is never held back.
    assert f.filter(grippers(1.0, 0.0), **squeezing).command[6] == pytest.approx(1.0)


def test_a_target_jumping_back_never_breaks_the_acceleration_limit():
    dt, lim = 0.02, limits()
    f = SafetyFilter(lim, dt)
    f.reset(np.zeros(14))
    commands = [f.filter(np.full(14, 1.0)).command for _ in range(20)]  # at full speed
    commands += [f.filter(commands[-1] + 0.001).command for _ in range(40)]  # then nearly here
    v = np.diff(np.array(commands), axis=0) / dt
    assert np.abs(np.diff(v, axis=0) / dt).max() <= lim.max_acceleration[0] + 1e-6
    np.testing.assert_allclose(commands[-1], commands[19] + 0.001, atol=1e-6)  # settles


def test_the_speed_towards_a_position_limit_allows_stopping_before_it():
    dt, lim = 0.02, limits()
    f = SafetyFilter(lim, dt)
    f.reset(np.full(14, 1.0))
    f.filter(np.full(14, 2.0))
    result = [f.filter(np.full(14, 9.0)).command for _ in range(60)]
    assert np.array(result).max() <= 2.0
    v = np.diff(np.array(result), axis=0) / dt
    assert np.abs(np.diff(v, axis=0) / dt).max() <= lim.max_acceleration[0] + 1e-6
    f2 = SafetyFilter(lim, dt)
    f2.reset(np.zeros(14))
    for _ in range(10):
        f2.filter(np.full(14, 1.0))
    stop = f2.stopping_point()
    while np.abs(f2.velocity).max() > 0:
        last = f2.filter(stop).command
    np.testing.assert_allclose(last, stop, atol=1e-9)
