"""The simulated arms behind their virtual Dynamixel buses, driven by the real driver.

A scripted operator moves the leader arms by hand; a minimal teleoperation loop (read leaders,
write followers, one sync read and one sync write per bus per tick) makes the MuJoCo followers
follow. Nothing here touches the simulated joints except through Protocol 2.0 on a pty.
"""

import os
import time

import numpy as np
import pytest

from halo_ros.drivers.aloha_arm import ArmCommand
from halo_ros.drivers.aloha_arm_set import ArmSet
from halo_ros.paths import calibration_file
from halo_ros.sim.expert import EPISODE_TICKS
from halo_ros.sim.runner import Operator, SimConfig, SimRunner


@pytest.fixture
def teleop_rig(tmp_path, monkeypatch):
    monkeypatch.setenv('HALO_ROS_RUN_DIR', str(tmp_path))
    runner = SimRunner(SimConfig(operator=Operator.LEADERS, virtual_buses=True, seed=3))
    runner.start()
    arms = ArmSet.from_file(calibration_file('sim_aloha.yaml'), environ=dict(os.environ))
    try:
        arms.configure()
        arms.activate(['follower_left', 'follower_right'])
        yield runner, arms
    finally:
        arms.close()
        runner.stop()


def test_teleoperated_episode_through_the_virtual_buses(teleop_rig):
    runner, arms = teleop_rig
    leader_of = {
        name: name.value.replace('follower', 'leader')
        for name in arms.arms
        if name.value.startswith('follower')
    }
    errors = []
    deadline = time.monotonic()
    while runner.status().tick < EPISODE_TICKS + 25:
        states = {name.value: state for name, state in arms.read().items()}
        failed = {n: s.error for n, s in states.items() if not s.fresh}
        assert not failed, f'bus reads failed: {failed}'
        commands = {
            f: ArmCommand.from_vector(states[lead].position()) for f, lead in leader_of.items()
        }
        assert not arms.write(commands), 'a write failed'
        # Arm joints only: a gripper closed on the cube rightly stops short of its leader.
        errors.append(
            max(
                np.abs(states[f.value].joint_position_rad - states[lead].joint_position_rad).max()
                for f, lead in leader_of.items()
            )
        )
        deadline += 0.02
        time.sleep(max(0.0, deadline - time.monotonic()))
    status = runner.status()
    # The followers track the leaders closely (one tick of servo lag), and the task succeeds.
    assert np.median(errors) < 0.05, f'median tracking error {np.median(errors):.3f}'
    assert status.success, f'teleoperated episode ended with reward {status.reward}'


def test_a_follower_with_torque_off_refuses_goals(teleop_rig):
    runner, arms = teleop_rig
    follower = next(a for n, a in arms.arms.items() if n.value == 'follower_left')
    pose = follower.read().position()
    follower.set_torque(False)
    with pytest.raises(RuntimeError):
        follower.write(ArmCommand.from_vector(np.append(pose[:6] + 0.2, 0.5)))
