"""`halo-ros calibrate arms` against virtual Dynamixel buses: kinematic arms built like a robot
with known (non-default) offsets and directions, moved to each pose by a scripted operator."""

import copy
import re

import numpy as np
import pytest
import yaml

from halo_ros import cli
from halo_ros.calibrate.arms import Step, calibrate_arms
from halo_ros.drivers import aloha_calibration
from halo_ros.drivers.aloha_arm import AlohaArm
from halo_ros.drivers.aloha_calibration import ArmName, CalibrationError
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus import KinematicArm, VirtualBus

TEMPLATE = calibration_file('sim_aloha.yaml')
# The robot on the bench: offsets and directions the template does not know. The continuous
# joints (waist, forearm_roll, wrist_rotate) keep +-3.14 rad limits, which fit one turn only with
# an offset of 2047 or 2048.
TRUE_JOINTS = {
    'follower_left': ([2048, 2010, 2100, 2047, 2150, 2048], [1, -1, 1, -1, 1, 1], (2990, 1660)),
    'leader_right': ([2047, 2090, 1990, 2048, 1900, 2047], [-1, 1, 1, 1, -1, 1], (2270, 1590)),
}


def _true_document(**changes) -> dict:
    document = yaml.safe_load(TEMPLATE.read_text())
    for arm, (offsets, directions, (opened, closed)) in TRUE_JOINTS.items():
        section = document['arms'][arm]
        for joint, offset, direction in zip(
            aloha_calibration.JOINT_NAMES, offsets, directions, strict=True
        ):
            section['joints'][joint].update(offset_ticks=offset, direction=direction)
        section['gripper'].update(open_ticks=opened, closed_ticks=closed)
    for path, value in changes.items():
        *keys, last = path.split('.')
        node = document
        for key in keys:
            node = node[key]
        node[last] = value
    return document


class Bench:
    """Virtual buses at the template's ports (under tmp) and an operator who moves the arms."""

    def __init__(self, run_dir, document):
        self.environ = {'HALO_ROS_RUN_DIR': str(run_dir)}
        truth = aloha_calibration.parse(document, environ=self.environ)
        self.truth = truth
        self.arms = {}
        self.buses = []
        for name in TRUE_JOINTS:
            arm = KinematicArm(name)
            bus = VirtualBus(arm, truth.arm(name), link=truth.arm(name).port)
            bus.start()
            self.arms[ArmName(name)], self.buses = arm, [*self.buses, bus]
        self.steps = []

    def pose(self, arm: ArmName, step: Step) -> np.ndarray:
        gripper = self.truth.arm(arm).gripper
        opening = {Step.GRIPPER_OPEN: 1.0, Step.GRIPPER_CLOSED: 0.0}.get(step, 0.5)
        joints = np.full(6, 0.5 if step is Step.POSITIVE else 0.0)
        return np.append(joints, gripper.motor_rad_from_normalised(opening))

    def ask(self, arm: ArmName, step: Step, instruction: str) -> None:
        assert instruction
        self.steps.append((arm, step))
        self.arms[arm].move_by_hand(self.pose(arm, step))

    def close(self):
        for bus in self.buses:
            bus.stop()


@pytest.fixture
def bench(tmp_path):
    bench = Bench(tmp_path / 'run', _true_document())
    yield bench
    bench.close()


def test_recovers_offsets_directions_and_gripper_ticks(bench, tmp_path, monkeypatch):
    monkeypatch.setenv('HALO_ROS_RUN_DIR', bench.environ['HALO_ROS_RUN_DIR'])
    output = tmp_path / 'my_aloha.yaml'
    result = calibrate_arms(TEMPLATE, output, bench.ask, arms=['follower_left'], samples=3)
    assert bench.steps == [(ArmName.FOLLOWER_LEFT, s) for s in Step]
    arm = result.arm('follower_left')
    offsets, directions, (opened, closed) = TRUE_JOINTS['follower_left']
    assert [j.offset_ticks for j in arm.joints] == pytest.approx(offsets, abs=1)
    assert [j.direction for j in arm.joints] == directions
    assert (arm.gripper.open_ticks, arm.gripper.closed_ticks) == pytest.approx(
        (opened, closed), abs=1
    )
    # Round trip: the written file loads, keeps what was not calibrated, and the driver using it
    # reads the arm at its zero pose as zero.
    loaded = aloha_calibration.load(output)
    assert loaded.arm('leader_right') == aloha_calibration.load(TEMPLATE).arm('leader_right')
    assert loaded.arm('follower_left').joints[1].min_rad == -1.852
    bench.arms[ArmName.FOLLOWER_LEFT].place(bench.pose(ArmName.FOLLOWER_LEFT, Step.GRIPPER_OPEN))
    driver = AlohaArm(loaded.arm('follower_left'))
    driver.configure()
    try:
        state = driver.read()
    finally:
        driver.cleanup()
    np.testing.assert_allclose(state.joint_position_rad, 0.0, atol=2e-3)
    assert state.gripper_position == pytest.approx(1.0, abs=2e-3)
    assert 'port: ${HALO_ROS_RUN_DIR' in output.read_text(), 'ports stay as the template wrote them'


def test_cli_guides_two_arms_step_by_step(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HALO_ROS_RUN_DIR', bench.environ['HALO_ROS_RUN_DIR'])
    prompts = []

    def operator(prompt: str) -> str:  # what a person does before pressing Enter
        prompts.append(prompt)
        arm, step = re.search(r'\[(\w+)\] ([a-z ]+):', prompt).groups()
        bench.ask(ArmName(arm), Step(step), prompt)
        return ''

    monkeypatch.setattr('builtins.input', operator)
    output = tmp_path / 'robot.yaml'
    code = cli.main(
        [
            'calibrate',
            'arms',
            '--template',
            str(TEMPLATE),
            '--output',
            str(output),
            '--arm',
            'follower_left',
            '--arm',
            'leader_right',
            '--samples',
            '2',
        ]
    )
    assert code == 0
    assert len(prompts) == 8 and all('Press Enter' in p for p in prompts)
    loaded = aloha_calibration.load(output)
    for name, (offsets, directions, _) in TRUE_JOINTS.items():
        assert [j.direction for j in loaded.arm(name).joints] == directions
        assert [j.offset_ticks for j in loaded.arm(name).joints] == pytest.approx(offsets, abs=1)
    assert 'wrote' in capsys.readouterr().out


def test_a_joint_that_did_not_move_is_named(bench, tmp_path):
    def lazy(arm, step, instruction):
        pose = bench.pose(arm, step)
        if step is Step.POSITIVE:
            pose[2] = 0.05  # the elbow barely moved
        bench.arms[arm].move_by_hand(pose)

    with pytest.raises(CalibrationError, match=r'arms\.follower_left\.joints\.elbow: moved'):
        calibrate_arms(
            TEMPLATE,
            tmp_path / 'x.yaml',
            lazy,
            arms=['follower_left'],
            samples=2,
            environ=bench.environ,
        )
    assert not (tmp_path / 'x.yaml').exists()


def test_limits_that_no_longer_fit_the_servo_are_named(tmp_path):
    # This robot's wrist is assembled far off centre: the template's limits would leave 0..4095.
    document = _true_document()
    document['arms']['follower_left']['joints']['wrist_angle'].update(
        offset_ticks=3200, min_rad=-1.0, max_rad=1.0
    )
    bench = Bench(tmp_path / 'run', document)
    try:
        with pytest.raises(CalibrationError, match=r'arms\.follower_left\.joints\.wrist_angle'):
            calibrate_arms(
                TEMPLATE,
                tmp_path / 'x.yaml',
                bench.ask,
                arms=['follower_left'],
                samples=2,
                environ=bench.environ,
            )
    finally:
        bench.close()


def test_calibration_file_round_trip_and_errors_name_the_field(tmp_path):
    document = _true_document()
    path = tmp_path / 'robot.yaml'
    path.write_text(yaml.safe_dump(document))
    environ = {'HALO_ROS_RUN_DIR': '/x'}
    assert aloha_calibration.load(path, environ=environ) == aloha_calibration.parse(
        copy.deepcopy(document), environ=environ, path=path
    )
    broken = copy.deepcopy(document)
    broken['arms']['leader_right']['gripper']['open_ticks'] = 'wide'
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(CalibrationError, match=r'arms\.leader_right\.gripper\.open_ticks'):
        aloha_calibration.load(path, environ=environ)
