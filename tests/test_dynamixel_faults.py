"""Fault injection: lost and corrupted replies are retried within budget, never served stale; a
port that vanishes (an unplugged adaptor) is reported stale and reopened when it returns."""

import time

import numpy as np
import pytest
from dynamixel_helpers import START_POSE, virtual_arm

from halo_ros.drivers.aloha_arm import AlohaArm, ArmCommand
from halo_ros.drivers.dynamixel import (
    DynamixelBus,
    DynamixelCommError,
    DynamixelPortError,
    DynamixelStatusError,
)
from halo_ros.drivers.dynamixel.tables import RAD_PER_TICK, Register, StatusError
from halo_ros.sim.virtual_bus import FaultInjection

IDS = tuple(range(1, 10))


@pytest.mark.parametrize(
    'faults',
    [
        FaultInjection(drop_probability=0.01, seed=1),
        FaultInjection(corrupt_probability=0.01, seed=2),
    ],
    ids=['drop-1%', 'corrupt-1%'],
)
def test_one_percent_faults_are_retried_and_never_stale(tmp_path, faults):
    with virtual_arm(tmp_path, 'follower_left', faults=faults) as (calibration, sim, bus):
        arm = AlohaArm(calibration)
        bus.set_faults(FaultInjection())  # a clean configure; faults start with the ticks
        arm.configure()
        bus.set_faults(faults)
        retried = failed = 0
        for tick in range(300):
            # Torque is off: a hand puts the arm in a new pose every tick, so a reply from an
            # earlier tick could never match the pose of this one.
            pose = START_POSE + 0.002 * (tick + 1)
            sim.move_by_hand(pose)
            state = arm.read()
            if state.fresh:
                np.testing.assert_allclose(state.joint_position_rad, pose[:6], atol=RAD_PER_TICK)
                assert 1 <= state.attempts <= calibration.max_attempts
                retried += state.attempts > 1
            else:
                failed += 1
                assert np.isnan(state.position()).all() and 'failed after 3 tries' in state.error
        arm.cleanup()
    injected = bus.replies_dropped + bus.replies_corrupted
    assert injected > 0 and retried > 0
    # 9 replies per read, 1 % each: ~8.6 % of reads need a retry, ~0.06 % exhaust 3 tries.
    assert failed <= 3
    assert arm.bus.failed_attempts >= retried


def test_a_dead_bus_raises_naming_register_ids_and_tries(tmp_path):
    with virtual_arm(tmp_path, faults=FaultInjection(drop_probability=1.0)) as (calibration, _, _):
        bus = DynamixelBus(calibration.port, latency_timer_ms=1.0, max_attempts=2)
        with bus:
            with pytest.raises(DynamixelCommError) as info:
                bus.read_state(IDS)
            message = str(info.value)
            assert (
                'SYNC_READ of Present Current..Present Position (address 126, 10 bytes)' in message
            )
            assert 'IDs [1, 2, 3, 4, 5, 6, 7, 8, 9]' in message and 'after 2 tries' in message
            with pytest.raises(DynamixelCommError, match='READ of Torque Enable .* IDs \\[4\\]'):
                bus.read(4, Register.TORQUE_ENABLE)
            assert bus.failed_attempts == 4


def test_arm_read_on_a_dead_bus_is_not_fresh(tmp_path):
    with virtual_arm(tmp_path) as (calibration, _, bus):
        arm = AlohaArm(calibration)
        arm.configure()
        assert arm.read().fresh
        bus.set_faults(FaultInjection(corrupt_probability=1.0))
        state = arm.read()
        assert not state.fresh and np.isnan(state.effort_ma).all()
        assert 'incorrect status packet' in state.error.lower()
        bus.set_faults(FaultInjection())
        assert arm.read().fresh  # recovers on the next tick
        arm.cleanup()


def test_a_refusal_is_raised_at_once_not_retried(tmp_path):
    with virtual_arm(tmp_path) as (calibration, _, _):
        with DynamixelBus(calibration.port, latency_timer_ms=4.0) as bus:
            bus.write(1, Register.TORQUE_ENABLE, 1)
            with pytest.raises(
                DynamixelStatusError, match='WRITE of Operating Mode .* refused'
            ) as info:
                bus.write(1, Register.OPERATING_MODE, 4)  # EEPROM while torque is on
            assert info.value.error is StatusError.ACCESS
            assert bus.failed_attempts == 1


def test_opening_a_missing_port_names_it(tmp_path):
    missing = tmp_path / 'ttyDXL_nowhere'
    with pytest.raises(DynamixelCommError, match=f'cannot open Dynamixel port {missing}'):
        DynamixelBus(str(missing)).open()


def test_a_port_that_vanishes_is_reported_stale_and_reopened_when_it_returns(tmp_path):
    with virtual_arm(tmp_path) as (calibration, sim, bus):
        arm = AlohaArm(calibration)
        arm.configure()
        arm.activate()
        pose = arm.read().position()
        bus.unplug()  # the USB adaptor is pulled: the pty closes under the open port
        state = arm.read()
        assert not state.fresh and 'the port failed' in state.error, state.error
        with pytest.raises(DynamixelPortError, match='lost; not written'):
            arm.write(ArmCommand.from_vector(pose))
        assert not arm.read().fresh  # still gone (and the reopen backoff is running)
        bus.replug()
        deadline = time.monotonic() + 10
        while not (state := arm.read()).fresh:
            assert time.monotonic() < deadline, f'never reopened: {state.error}'
            time.sleep(0.02)
        np.testing.assert_allclose(state.position(), pose, atol=2 * RAD_PER_TICK)
        goal = pose + [0.1, 0, 0, 0, 0, 0, 0]
        arm.write(ArmCommand.from_vector(goal))  # writes land again
        deadline = time.monotonic() + 5
        while abs(sim.read().position_rad[0] - goal[0]) > 2 * RAD_PER_TICK:
            assert time.monotonic() < deadline, 'the goal written after the reopen never arrived'
            time.sleep(0.01)
        assert (arm.port_losses, arm.port_reopens) == (1, 1)
        arm.cleanup()
