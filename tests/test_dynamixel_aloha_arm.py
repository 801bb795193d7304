"""AlohaArm on a virtual bus: lifecycle, units, modes, limits, leader hand-over, recovery."""

import time
from dataclasses import replace

import numpy as np
import pytest
from dynamixel_helpers import START_POSE, sim_calibration, virtual_arm

from halo_ros.drivers import aloha_calibration
from halo_ros.drivers.aloha_arm import AlohaArm, ArmCommand, Lifecycle
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.aloha_motors import ArmModel
from halo_ros.drivers.dynamixel.tables import RAD_PER_TICK, HardwareError, OperatingMode, Register
from halo_ros.paths import calibration_file
from halo_ros.sim.arm_io import ShaftState
from halo_ros.sim.virtual_bus import KinematicArm, VirtualBus, start_virtual_buses
from halo_ros.sim.virtual_bus.hardware import mounts

TICK = RAD_PER_TICK


def wait_for(arm, predicate, timeout_s=2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = arm.read()
        if state.fresh and predicate(state):
            return state
        time.sleep(0.01)
    raise AssertionError(f'condition not reached; last state {arm.read()}')


@pytest.fixture
def follower(tmp_path):
    with virtual_arm(tmp_path, 'follower_left') as (calibration, sim, bus):
        arm = AlohaArm(calibration)
        yield arm, sim, bus
        arm.cleanup()


def test_configure_reads_only(follower):
    arm, sim, bus = follower
    bus.servos[9].write(Register.OPERATING_MODE.address, bytes([OperatingMode.POSITION]))
    before = {i: bytes(s.memory[:64]) for i, s in bus.servos.items()}
    arm.configure()
    state = arm.read()
    assert arm.lifecycle is Lifecycle.INACTIVE and state.fresh
    assert {i: bytes(s.memory[:64]) for i, s in bus.servos.items()} == before
    assert not any(s.torque_enabled for s in bus.servos.values())
    np.testing.assert_allclose(state.joint_position_rad, START_POSE[:6], atol=TICK)
    gripper = arm.calibration.gripper
    expected = (2048 + START_POSE[6] / TICK - gripper.closed_ticks) / (
        gripper.open_ticks - gripper.closed_ticks
    )
    assert state.gripper_position == pytest.approx(
        expected, abs=1.0 / (gripper.open_ticks - gripper.closed_ticks)
    )
    with pytest.raises(RuntimeError, match='write\\(\\) needs an active arm'):
        arm.write(ArmCommand(START_POSE[:6], 0.5))


def test_activate_sets_modes_and_current_limit_then_holds_pose(follower):
    arm, sim, bus = follower
    bus.servos[9].write(Register.OPERATING_MODE.address, bytes([OperatingMode.POSITION]))
    arm.configure()
    arm.activate()
    assert all(s.torque_enabled for s in bus.servos.values())
    assert bus.servos[9].operating_mode is OperatingMode.CURRENT_BASED_POSITION
    assert bus.servos[9].get(Register.CURRENT_LIMIT) == round(807.0 / 2.69)
    assert all(bus.servos[i].operating_mode is OperatingMode.POSITION for i in range(1, 9))
    time.sleep(0.05)
    np.testing.assert_allclose(sim.read().position_rad, START_POSE, atol=TICK)  # nothing jumped


def test_write_moves_the_arm_in_calibrated_units(follower):
    arm, sim, _ = follower
    arm.configure()
    arm.activate()
    target = np.array([0.3, -0.5, 1.0, -0.2, 0.4, -0.1])
    arm.write(ArmCommand(target, 1.0))
    state = wait_for(arm, lambda s: np.allclose(s.position(), np.append(target, 1.0), atol=TICK))
    gripper = arm.calibration.gripper
    assert sim.read().position_rad[6] == pytest.approx(
        gripper.to_motor_rad(gripper.open_ticks), abs=TICK
    )
    assert state.alert_ids == () and state.attempts == 1


@pytest.mark.parametrize(
    'joints, gripper, message',
    [
        ([0, -2.5, 0, 0, 0, 0], 0.5, 'shoulder command -2.5 rad is outside'),
        ([0, 0, float('nan'), 0, 0, 0], 0.5, 'elbow command nan'),
        ([0, 0, 0, 0, 0, 0], 1.5, 'gripper command 1.5 is outside'),
        ([0, 0, 0, 0, 0, 0], float('nan'), 'gripper command nan'),
        ([0, 0, 0], 0.5, 'shape \\(6,\\)'),
    ],
)
def test_out_of_range_commands_are_refused_not_clamped(follower, joints, gripper, message):
    arm, _, _ = follower
    with pytest.raises(ValueError, match=message):
        arm.goal_ticks(ArmCommand(np.array(joints, float), gripper))


def test_leader_released_to_the_operator_and_taken_back(tmp_path):
    with virtual_arm(tmp_path, 'leader_right') as (calibration, sim, bus):
        arm = AlohaArm(calibration)
        arm.configure()
        arm.activate()
        assert bus.servos[9].operating_mode is OperatingMode.POSITION  # XL430: no current control
        arm.set_torque(False)
        hand = START_POSE + np.array([0.2, 0.1, -0.1, 0.0, 0.3, 0.0, -0.2])
        sim.move_by_hand(hand)
        state = arm.read()
        np.testing.assert_allclose(state.joint_position_rad, hand[:6], atol=TICK)
        assert np.isnan(state.effort_ma[5:]).all()  # XL430 wrist_rotate and gripper: no current
        arm.set_torque(True)  # holds where the hand left it: no jump back
        time.sleep(0.05)
        np.testing.assert_allclose(sim.read().position_rad, hand, atol=TICK)
        arm.cleanup()
        assert arm.lifecycle is Lifecycle.UNCONFIGURED


def test_gripper_overload_is_reported_and_cleared_by_reboot(follower):
    arm, sim, bus = follower
    arm.configure()
    arm.activate()
    bus.latch_error(9, HardwareError.OVERLOAD)
    state = arm.read()
    assert state.fresh and state.alert_ids == (9,)
    assert arm.hardware_errors() == {9: HardwareError.OVERLOAD}
    arm.reboot((9,))
    assert arm.hardware_errors() == {}
    assert arm.read().alert_ids == ()
    assert bus.servos[9].torque_enabled  # restored, holding the present pose
    arm.write(ArmCommand(START_POSE[:6], 0.0))
    wait_for(arm, lambda s: abs(s.gripper_position) < 1e-3)


def test_wrong_servo_model_fails_configure(tmp_path):
    with virtual_arm(tmp_path, 'follower_left') as (calibration, _, _):
        wrong = replace(
            calibration,
            model=ArmModel.WX250S,
            gripper=replace(calibration.gripper, current_limit_ma=None),
        )
        arm = AlohaArm(wrong)
        with pytest.raises(Exception, match='ID 1 is model 1120, expected XM430_W350'):
            arm.configure()
        assert not arm.bus.is_open


def test_arm_set_reads_and_writes_four_arms(tmp_path):
    environ = {'HALO_ROS_RUN_DIR': str(tmp_path)}
    robot = aloha_calibration.load(calibration_file('sim_aloha.yaml'), environ=environ)
    sims = {name.value: KinematicArm(name.value, max_velocity_rad_s=50.0) for name in ArmName}
    buses = start_virtual_buses(sims, robot)
    try:
        with ArmSet.from_file(robot.path, environ=environ) as arms:
            arms.configure()
            arms.activate([ArmName.FOLLOWER_LEFT, ArmName.FOLLOWER_RIGHT])
            states = arms.read()
            assert set(states) == set(ArmName) and all(s.fresh for s in states.values())
            target = np.array([0.2, -0.4, 0.8, 0.0, 0.1, 0.0])
            arms.write({'follower_left': ArmCommand(target, 0.25)})
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                left = arms.read()[ArmName.FOLLOWER_LEFT]
                if np.allclose(left.position(), np.append(target, 0.25), atol=1e-3):
                    break
                time.sleep(0.01)
            np.testing.assert_allclose(left.position(), np.append(target, 0.25), atol=1e-3)
            np.testing.assert_allclose(sims['follower_right'].read().position_rad, 0.0, atol=TICK)
            # One arm's refusal is reported for that arm; the others in the call are written.
            failed = arms.write(
                {
                    ArmName.LEADER_LEFT: ArmCommand(target, 0.5),
                    'follower_left': ArmCommand(0 * target, 0.25),
                }
            )
            assert list(failed) == [ArmName.LEADER_LEFT]
            assert 'leader_left: write() needs an active arm' in str(failed[ArmName.LEADER_LEFT])
            assert isinstance(failed[ArmName.LEADER_LEFT], RuntimeError)
    finally:
        for bus in buses.values():
            bus.stop()


@pytest.mark.parametrize('mirrored', [False, True], ids=['as-shipped', 'mirrored-calibration'])
def test_effort_and_velocity_come_back_signed_in_joint_units(tmp_path, mirrored):
    effort = np.array([100.0, -200.0, 300.0, -50.0, 80.0, -120.0, 400.0])  # mA per shaft
    velocity = np.array([0.5, -0.4, 0.3, -0.2, 0.1, -0.6, 1.0])  # rad/s per shaft

    class Loaded(KinematicArm):
        def read(self):
            state = super().read()
            return ShaftState(state.position_rad, velocity, effort)

    calibration = sim_calibration(tmp_path)
    if mirrored:  # every direction -1 and offsets away from 2048: the robot reads differently
        offsets = (2048, 2100, 1990, 2048, 2150, 2048)
        joints = tuple(
            replace(j, direction=-1, offset_ticks=o)
            for j, o in zip(calibration.joints, offsets, strict=True)
        )
        gripper = replace(calibration.gripper, direction=-1, offset_ticks=2100)
        calibration = replace(calibration, joints=joints, gripper=gripper)
    with VirtualBus(Loaded('follower_left'), calibration, link=calibration.port):
        arm = AlohaArm(calibration)
        arm.configure()
        state = arm.read()
        arm.cleanup()
    np.testing.assert_allclose(state.effort_ma, effort, atol=2.69 / 2)
    np.testing.assert_allclose(state.joint_velocity_rad_s, velocity[:6], atol=0.024 / 2)
    gripper = calibration.gripper
    span_rad = gripper.to_motor_rad(gripper.open_ticks) - gripper.to_motor_rad(gripper.closed_ticks)
    assert state.gripper_velocity_per_s == pytest.approx(
        velocity[6] / span_rad, abs=0.012 / abs(span_rad)
    )


@pytest.mark.parametrize('model_arm', ['follower_left', 'leader_left'])
def test_activate_calibrates_misaligned_shadows(tmp_path, model_arm):
    calibration = sim_calibration(tmp_path, model_arm)
    sim = KinematicArm(model_arm, initial_position_rad=START_POSE, max_velocity_rad_s=50.0)
    errors = {3: 37.0, 5: -21.0}  # shoulder and elbow shadows mounted off by some ticks
    with VirtualBus(sim, calibration, link=calibration.port, assembly_error_ticks=errors) as bus:
        arm = AlohaArm(calibration)
        arm.configure()
        reading = arm.bus.read_state(tuple(range(1, 10)))
        ticks = dict(zip(range(1, 10), reading.position_ticks.tolist(), strict=True))
        assert abs(ticks[3] - ticks[2]) == 37 and abs(ticks[5] - ticks[4]) == 21
        arm.activate()
        reading = arm.bus.read_state(tuple(range(1, 10)))
        ticks = dict(zip(range(1, 10), reading.position_ticks.tolist(), strict=True))
        assert ticks[3] == ticks[2] and ticks[5] == ticks[4]
        # The shadows now execute their primaries' goals at the same physical angle.
        arm.write(ArmCommand(np.array([0.0, -0.5, 0.9, 0.0, 0.0, 0.0]), 0.5))
        wait_for(arm, lambda s: abs(s.joint_position_rad[1] + 0.5) < TICK)
        mount = {m.motor.id: m for m in mounts(calibration, errors)}
        for shadow, shaft in ((3, 1), (5, 2)):
            servo = bus.servos[shadow]
            shadow_goal_rad = mount[shadow].shaft_rad(
                servo.get(Register.GOAL_POSITION),
                reverse=bool(servo.get(Register.DRIVE_MODE) & 1),
                homing_offset=servo.get(Register.HOMING_OFFSET),
            )
            assert shadow_goal_rad == pytest.approx(sim.read().position_rad[shaft], abs=TICK)
        arm.cleanup()
