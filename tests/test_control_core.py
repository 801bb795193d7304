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


def test_points_in_the_past_are_skipped_by_stamp():
    buffer = ChunkBuffer()
    buffer.offer(chunk(stamp_ns=0), now_ns=3 * DT)  # arrives 60 ms after its observation
    np.testing.assert_allclose(buffer.target(3 * DT), np.full(14, 0.03))
    assert buffer.index_at(3 * DT) == 3
    np.testing.assert_allclose(buffer.target(3 * DT + DT // 2), np.full(14, 0.035))
    assert buffer.target(10 * DT) is None  # ran out


def test_chunk_period_different_from_control_period_is_interpolated():
    buffer = ChunkBuffer()
    buffer.offer(chunk(stamp_ns=0, dt_ns=50 * MS), now_ns=0)
    np.testing.assert_allclose(buffer.target(20 * MS), np.full(14, 0.004))


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


def test_stale_out_of_order_and_old_epoch_chunks_are_refused():
    buffer = ChunkBuffer()
    with pytest.raises(ChunkError) as e:
        buffer.offer(chunk(stamp_ns=0), now_ns=20 * DT)
    assert e.value.reason is Rejection.STALE
    buffer.offer(chunk(stamp_ns=10 * DT, seq=5, epoch=1), now_ns=11 * DT)
    with pytest.raises(ChunkError) as e:
        buffer.offer(chunk(stamp_ns=9 * DT, seq=6, epoch=1), now_ns=11 * DT)
    assert e.value.reason is Rejection.OUT_OF_ORDER
    with pytest.raises(ChunkError) as e:
        buffer.offer(chunk(stamp_ns=11 * DT, seq=4, epoch=1), now_ns=11 * DT)
    assert e.value.reason is Rejection.OUT_OF_ORDER
    with pytest.raises(ChunkError) as e:
        buffer.offer(chunk(stamp_ns=11 * DT, seq=9, epoch=0), now_ns=11 * DT)
    assert e.value.reason is Rejection.OLD_EPOCH
    # A newer epoch replaces the current chunk even with a lower sequence number.
    buffer.offer(chunk(1.0, stamp_ns=11 * DT, seq=0, epoch=2), now_ns=11 * DT)
    np.testing.assert_allclose(buffer.target(11 * DT), np.full(14, 1.0))


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


def test_gripper_stops_closing_past_its_current_limit():
    f = SafetyFilter(
        limits(max_velocity=np.ones(14) * 50, max_acceleration=np.ones(14) * 1e5), 0.02
    )
    f.reset(np.full(14, 0.5))
    squeeze = np.full(14, 0.5)
    squeeze[[6, 13]] = 0.0
    result = f.filter(
        squeeze, gripper_effort_ma=np.array([900.0, 10.0]), gripper_position=np.array([0.45, 0.45])
    )
    assert Limit.GRIPPER_CURRENT in result.limited
    assert result.command[6] == pytest.approx(0.45)  # held where it touches
    assert result.command[13] < 0.45  # the other gripper is free to close
