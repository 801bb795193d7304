"""Calibration files: schema validation naming the field, env expansion, unit round trips."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import yaml

from halo_ros.drivers import aloha_calibration as cal
from halo_ros.drivers.aloha_motors import MOTOR_MAPS, ArmModel, all_motors, primary_ids
from halo_ros.drivers.dynamixel.tables import RAD_PER_TICK, SECONDARY_ID_OFF
from halo_ros.paths import calibration_file

ENV = {'HALO_ROS_RUN_DIR': '/run/test'}


def sim_document():
    with open(calibration_file('sim_aloha.yaml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


def test_sim_and_example_differ_only_in_ports():
    sim = cal.load(calibration_file('sim_aloha.yaml'), environ=ENV)
    real = cal.load(calibration_file('example_aloha.yaml'), environ=ENV)
    assert set(sim.arms) == set(real.arms) == set(cal.ArmName)
    for name in cal.ArmName:
        assert sim.arm(name).port == f'/run/test/ttyDXL_{name.value}'
        assert real.arm(name).port.startswith('/dev/ttyDXL_')
        assert replace(sim.arm(name), port='') == replace(real.arm(name), port='')


def test_env_default_is_used_when_unset():
    robot = cal.load(calibration_file('sim_aloha.yaml'), environ={})
    assert robot.arm('follower_left').port == '/tmp/halo_ros/ttyDXL_follower_left'


def test_motor_maps():
    for model in ArmModel:
        assert [m.id for m in all_motors(model)] == list(range(1, 10))
        assert primary_ids(model) == (1, 2, 4, 6, 7, 8, 9)
        shadows = {m.id: m.secondary_id for s in MOTOR_MAPS[model] for m in s.shadows}
        assert shadows == {3: 2, 5: 4}
        for shaft in MOTOR_MAPS[model]:
            assert shaft.primary.secondary_id == SECONDARY_ID_OFF
            for shadow in shaft.shadows:  # mirrored mounting: opposite drive direction
                assert shadow.reverse != shaft.primary.reverse


@pytest.mark.parametrize('name', list(cal.ArmName))
def test_round_trips_within_one_tick(name):
    arm = cal.load(calibration_file('sim_aloha.yaml'), environ=ENV).arm(name)
    rng = np.random.default_rng(0)
    for joint in arm.joints:
        for rad in rng.uniform(joint.min_rad, joint.max_rad, 50):
            assert abs(joint.to_rad(joint.to_ticks(rad)) - rad) <= RAD_PER_TICK / 2 + 1e-12
        for ticks in range(0, 4096, 97):
            assert joint.to_ticks(joint.to_rad(ticks)) == ticks
    gripper = arm.gripper
    span = abs(gripper.open_ticks - gripper.closed_ticks)
    for norm in np.linspace(0.0, 1.0, 41):
        assert abs(gripper.to_normalised(gripper.to_ticks(norm)) - norm) <= 0.5 / span + 1e-12
    assert gripper.to_normalised(gripper.open_ticks) == 1.0
    assert gripper.to_normalised(gripper.closed_ticks) == 0.0
    for ticks in range(
        min(gripper.open_ticks, gripper.closed_ticks), max(gripper.open_ticks, gripper.closed_ticks)
    ):
        assert gripper.to_ticks(gripper.to_normalised(ticks)) == ticks


def test_negative_direction_round_trip():
    joint = cal.JointCalibration(offset_ticks=1000, direction=-1, min_rad=-1.0, max_rad=1.0)
    assert joint.to_ticks(0.5) == 1000 - round(0.5 / RAD_PER_TICK)
    assert joint.to_rad(joint.to_ticks(-0.7)) == pytest.approx(-0.7, abs=RAD_PER_TICK / 2)


def _set(document, path, value):
    *parents, leaf = path.split('.')
    node = document
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value


_DELETE = object()
_SHOULDER = 'arms.follower_left.joints.shoulder'


@pytest.mark.parametrize(
    'path, value, message',
    [
        ('version', 2, 'version: expected 1'),
        ('bus.baud_rate', 1234, 'baud_rate 1234'),
        ('bus.latency_timer_ms', 'fast', 'bus.latency_timer_ms: expected float'),
        ('bus.max_attempts', 0, 'max_attempts must be 1..10'),
        ('bus.extra', 1, 'bus.extra: unknown field'),
        ('arms.follower_middle', {}, 'arms.follower_middle: unknown arm'),
        ('arms.follower_left.model', 'vx300', "arms.follower_left.model: 'vx300' is not one of"),
        ('arms.follower_left.port', _DELETE, 'arms.follower_left.port: missing'),
        (
            'arms.follower_left.port',
            '${HALO_ROS_NOT_SET}/tty',
            'arms.follower_left.port: environment variable HALO_ROS_NOT_SET',
        ),
        (f'{_SHOULDER}.direction', 2, f'{_SHOULDER}: direction must be 1 or -1'),
        (f'{_SHOULDER}.min_rad', 3.0, f'{_SHOULDER}: min_rad 3.0 must be below max_rad'),
        (f'{_SHOULDER}.max_rad', float('nan'), f'{_SHOULDER}: min_rad/max_rad must be finite'),
        (f'{_SHOULDER}.offset_ticks', 2048.5, f'{_SHOULDER}.offset_ticks: expected int'),
        (f'{_SHOULDER}.offset_ticks', 800, f'{_SHOULDER}: min_rad -1.852 maps to -407 ticks'),
        ('arms.follower_left.joints.elbow', _DELETE, 'arms.follower_left.joints.elbow: missing'),
        ('arms.follower_left.joints.wrist', {}, 'arms.follower_left.joints.wrist: unknown field'),
        (
            'arms.follower_left.gripper.open_ticks',
            1643,
            'arms.follower_left.gripper: open_ticks and closed_ticks',
        ),
        (
            'arms.follower_left.gripper.current_limit_ma',
            _DELETE,
            'gripper.current_limit_ma is required',
        ),
        (
            'arms.leader_left.gripper.current_limit_ma',
            500.0,
            'gripper.current_limit_ma must be omitted',
        ),
        ('arms', {}, 'arms: no arm is configured'),
    ],
)
def test_invalid_calibration_names_the_field(tmp_path, path, value, message):
    document = copy.deepcopy(sim_document())
    _set(document, path, value)
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(cal.CalibrationError) as info:
        cal.load(bad, environ={})
    assert str(info.value).startswith(f'{bad}: ')
    assert message in str(info.value)
