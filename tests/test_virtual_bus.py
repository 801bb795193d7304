"""The virtual bus through a real pty and the unmodified dynamixel-sdk (stock PortHandler)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from dynamixel_helpers import START_POSE, sim_calibration, virtual_arm
from dynamixel_sdk import (
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from halo_ros.drivers import aloha_calibration
from halo_ros.drivers.aloha_arm import open_arms
from halo_ros.drivers.dynamixel import protocol
from halo_ros.drivers.dynamixel.tables import (
    ALERT_BIT,
    RAD_PER_TICK,
    HardwareError,
    Instruction,
    OperatingMode,
    Register,
    StatusError,
)
from halo_ros.paths import calibration_file
from halo_ros.sim.arm_io import ShaftState
from halo_ros.sim.virtual_bus import KinematicArm, start_virtual_buses
from halo_ros.sim.virtual_bus import bus as virtual_bus_module

IDS = range(1, 10)


@pytest.fixture
def sdk(tmp_path):
    with virtual_arm(tmp_path) as (calibration, arm, bus):
        port = PortHandler(calibration.port)
        assert port.openPort() and port.setBaudRate(1_000_000)
        try:
            yield port, PacketHandler(2.0), arm, bus
        finally:
            port.closePort()


def wait_until(predicate, timeout_s=2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_symlink_at_the_calibrated_port(tmp_path):
    with virtual_arm(tmp_path, 'leader_right') as (calibration, _, bus):
        assert calibration.port == str(tmp_path / 'ttyDXL_leader_right')
        assert os.readlink(calibration.port) == bus.pty_path
    assert not os.path.lexists(calibration.port)  # removed on stop


def test_ping_ids_1_to_9_with_model_numbers(sdk):
    port, handler, _, _ = sdk
    models = {}
    for dxl_id in IDS:
        model, result, error = handler.ping(port, dxl_id)
        assert (result, error) == (COMM_SUCCESS, 0)
        models[dxl_id] = model
    assert models == {**{i: 1120 for i in range(1, 8)}, 8: 1020, 9: 1020}  # XM540 x7, XM430 x2
    assert handler.ping(port, 10)[1] == COMM_RX_TIMEOUT


def test_sync_read_of_nine_servos_matches_the_arm(sdk):
    port, handler, _, _ = sdk
    group = GroupSyncRead(port, handler, Register.PRESENT_CURRENT.address, 10)
    for dxl_id in IDS:
        group.addParam(dxl_id)
    assert group.txRxPacket() == COMM_SUCCESS
    ticks = [Register.PRESENT_POSITION.decode(group.getData(i, 132, 4)) for i in IDS]
    # Calibration: offset 2048, direction +1; shadows (3, 5) read like their primaries (2, 4).
    expected = np.round(2048 + START_POSE / RAD_PER_TICK).astype(int)
    shaft_of_id = [0, 1, 1, 2, 2, 3, 4, 5, 6]
    assert ticks == [expected[s] for s in shaft_of_id]


def test_bulk_read(sdk):
    port, handler, _, _ = sdk
    group = GroupBulkRead(port, handler)
    group.addParam(1, Register.MODEL_NUMBER.address, 2)
    group.addParam(9, Register.OPERATING_MODE.address, 1)
    assert group.txRxPacket() == COMM_SUCCESS
    assert group.getData(1, 0, 2) == 1120
    assert group.getData(9, 11, 1) == OperatingMode.CURRENT_BASED_POSITION


def test_sync_write_moves_the_joint_and_its_shadow_follows(sdk):
    port, handler, arm, bus = sdk
    assert handler.write1ByteTxRx(port, 2, 64, 1) == (COMM_SUCCESS, 0)  # shadow 3 follows too
    assert bus.servos[3].torque_enabled
    goal = 2048 + 300
    writer = GroupSyncWrite(port, handler, Register.GOAL_POSITION.address, 4)
    writer.addParam(2, list(goal.to_bytes(4, 'little')))
    assert writer.txPacket() == COMM_SUCCESS
    assert wait_until(lambda: abs(arm.read().position_rad[1] - 300 * RAD_PER_TICK) < 1e-6)
    assert bus.servos[3].get(Register.GOAL_POSITION) == goal  # executed silently by the shadow
    position, result, _ = handler.read4ByteTxRx(port, 3, Register.PRESENT_POSITION.address)
    assert result == COMM_SUCCESS and position == goal


def test_torque_off_leaves_the_shaft_put(sdk):
    port, handler, arm, _ = sdk
    handler.write1ByteTxRx(port, 1, 64, 1)
    handler.write1ByteTxRx(port, 1, 64, 0)
    handler.write4ByteTxRx(port, 1, Register.GOAL_POSITION.address, 2048 + 500)
    time.sleep(0.05)
    assert arm.read().position_rad[0] == pytest.approx(START_POSE[0], abs=RAD_PER_TICK)


def test_mode_change_and_eeprom_lock(sdk):
    port, handler, _, _ = sdk
    mode = Register.OPERATING_MODE.address
    assert handler.write1ByteTxRx(port, 1, mode, OperatingMode.EXTENDED_POSITION) == (
        COMM_SUCCESS,
        0,
    )
    assert handler.read1ByteTxRx(port, 1, mode)[0] == OperatingMode.EXTENDED_POSITION
    handler.write1ByteTxRx(port, 1, 64, 1)
    result, error = handler.write1ByteTxRx(port, 1, mode, OperatingMode.POSITION)
    assert result == COMM_SUCCESS and error == StatusError.ACCESS  # EEPROM locked, torque on
    assert handler.read1ByteTxRx(port, 1, mode)[0] == OperatingMode.EXTENDED_POSITION
    handler.write1ByteTxRx(port, 1, 64, 0)
    assert handler.write1ByteTxRx(port, 1, mode, OperatingMode.POSITION) == (COMM_SUCCESS, 0)


def test_refusals(sdk):
    port, handler, _, _ = sdk
    # Read-only item, unsupported mode, goal beyond the Max Position Limit in position mode.
    assert (
        handler.write2ByteTxRx(port, 1, Register.MODEL_NUMBER.address, 1)[1] == StatusError.ACCESS
    )
    assert (
        handler.write1ByteTxRx(port, 1, Register.OPERATING_MODE.address, 2)[1]
        == StatusError.DATA_RANGE
    )
    high = handler.read4ByteTxRx(port, 2, Register.MAX_POSITION_LIMIT.address)[0]
    error = handler.write4ByteTxRx(port, 2, Register.GOAL_POSITION.address, high + 1)[1]
    assert error == StatusError.DATA_LIMIT


def test_status_return_level(sdk):
    port, handler, _, _ = sdk
    srl = Register.STATUS_RETURN_LEVEL.address
    # The new level already governs the reply to the write that sets it [assumption].
    assert handler.write1ByteTxRx(port, 4, srl, 0)[0] == COMM_RX_TIMEOUT
    assert handler.read1ByteTxRx(port, 4, 11)[1] == COMM_RX_TIMEOUT  # level 0: no read replies
    assert handler.ping(port, 4)[1] == COMM_SUCCESS  # ...but PING is always answered
    handler.write1ByteTxRx(port, 4, srl, 1)
    assert handler.read1ByteTxRx(port, 4, srl) == (1, COMM_SUCCESS, 0)


def test_reboot_clears_a_latched_overload(sdk):
    port, handler, arm, bus = sdk
    handler.write1ByteTxRx(port, 9, 64, 1)
    bus.latch_error(9, HardwareError.OVERLOAD)
    value, result, error = handler.read1ByteTxRx(port, 9, Register.HARDWARE_ERROR_STATUS.address)
    assert result == COMM_SUCCESS and value == HardwareError.OVERLOAD and error & ALERT_BIT
    assert handler.read1ByteTxRx(port, 9, 64)[0] == 0  # the error took torque away
    assert not arm._torque[6]
    _, error = handler.write1ByteTxRx(port, 9, 64, 1)
    assert error == (StatusError.RESULT_FAIL | ALERT_BIT)  # no torque until REBOOT
    assert handler.ping(port, 9)[2] & ALERT_BIT  # latched: every reply carries the alert
    result, _ = handler.reboot(port, 9)
    assert result == COMM_SUCCESS
    assert handler.read1ByteTxRx(port, 9, Register.HARDWARE_ERROR_STATUS.address) == (
        0,
        COMM_SUCCESS,
        0,
    )
    assert handler.write1ByteTxRx(port, 9, 64, 1) == (COMM_SUCCESS, 0)


def test_unsupported_instruction_is_refused(sdk):
    port, handler, _, _ = sdk
    assert handler.action(port, 1) == COMM_SUCCESS  # ACTION expects no reply
    assert handler.factoryReset(port, 1, 0xFF) == (COMM_SUCCESS, StatusError.INSTRUCTION)


def test_four_buses_on_simulated_arms_and_the_arm_driver(tmp_path):
    robot = aloha_calibration.load(
        calibration_file('sim_aloha.yaml'), environ={'HALO_ROS_RUN_DIR': str(tmp_path)}
    )
    sims = {name.value: KinematicArm(name.value) for name in aloha_calibration.ArmName}
    buses = start_virtual_buses(sims, robot)
    try:
        arms = open_arms(robot.path, environ={'HALO_ROS_RUN_DIR': str(tmp_path)})
        for name, arm in arms.items():
            sims[name.value].move_by_hand(np.full(7, 0.1 if name.is_follower else -0.1))
            arm.configure()
            state = arm.read()
            assert state.fresh and state.joint_position_rad[0] == pytest.approx(
                0.1 if name.is_follower else -0.1, abs=RAD_PER_TICK
            )
            arm.cleanup()
    finally:
        for bus in buses.values():
            bus.stop()


def test_sustained_current_at_the_limit_latches_overload(tmp_path, monkeypatch):
    monkeypatch.setattr(virtual_bus_module, 'OVERLOAD_LATCH_S', 0.05)

    class Squeezing(KinematicArm):
        def read(self):
            state = super().read()
            effort = np.zeros(7)
            effort[6] = 900.0  # mA, above the follower gripper's 807 mA Current Limit
            return ShaftState(state.position_rad, state.velocity_rad_s, effort)

    calibration = sim_calibration(tmp_path)
    bus = virtual_bus_module.VirtualBus(
        Squeezing('follower_left'), calibration, link=calibration.port
    )
    with bus:
        port = PortHandler(calibration.port)
        port.openPort()
        handler = PacketHandler(2.0)
        handler.write1ByteTxRx(port, 9, 64, 1)
        error_address = Register.HARDWARE_ERROR_STATUS.address
        assert wait_until(lambda: handler.read1ByteTxRx(port, 9, error_address)[0] != 0)
        assert handler.read1ByteTxRx(port, 9, error_address)[0] == HardwareError.OVERLOAD
        assert handler.read1ByteTxRx(port, 9, 64)[0] == 0
        port.closePort()


def test_cli_serves_until_interrupted(tmp_path):
    env = {**os.environ, 'HALO_ROS_RUN_DIR': str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, '-m', 'halo_ros.cli', 'virtual-bus', '--arm', 'leader_left'],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().split()
        assert line == ['leader_left', str(tmp_path / 'ttyDXL_leader_left')]
        port = PortHandler(line[1])
        port.openPort()
        assert PacketHandler(2.0).ping(port, 9)[:2] == (1060, COMM_SUCCESS)  # XL430 gripper
        port.closePort()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert not os.path.lexists(line[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_shadows_execute_silently_and_broadcasts_get_no_reply(tmp_path):
    calibration = sim_calibration(tmp_path)
    bus = virtual_bus_module.VirtualBus(KinematicArm('follower_left'), calibration)  # no pty
    read = protocol.encode_instruction(2, Instruction.READ, bytes([132, 0, 4, 0]))
    replies = bus.handle(protocol.decode(read))
    assert [protocol.decode(r).id for r in replies] == [2]  # the shadow (ID 3) stays silent
    write = protocol.encode_instruction(4, Instruction.WRITE, bytes([64, 0, 1]))
    assert [protocol.decode(r).id for r in bus.handle(protocol.decode(write))] == [4]
    assert bus.servos[5].torque_enabled  # ...but executes
    broadcast = protocol.encode_instruction(0xFE, Instruction.WRITE, bytes([64, 0, 0]))
    assert bus.handle(protocol.decode(broadcast)) == []
    assert not any(s.torque_enabled for s in bus.servos.values())
    ping_all = protocol.encode_instruction(0xFE, Instruction.PING)
    assert [protocol.decode(r).id for r in bus.handle(protocol.decode(ping_all))] == list(IDS)
