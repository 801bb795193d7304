"""EM-CoT primitives on a real scripted-expert episode from the simulator (not synthetic data)."""

import numpy as np
import pytest

from halo_ros.recording.primitives import Phase, arm_primitives, runs
from halo_ros.sim.expert import TransferCubeExpert
from halo_ros.sim.expert_eval import run_episode
from halo_ros.sim.runner import ground_truth_joints
from halo_ros.sim.world import AlohaSim

FPS = 50.0


@pytest.fixture(scope='module')
def expert_episode():
    sim = AlohaSim()
    states = []
    result = run_episode(
        sim, TransferCubeExpert(sim), 4, lambda tick: states.append(ground_truth_joints(sim)[0])
    )
    assert result.success
    return np.array(states)  # (400, 14) measured follower joints, grippers 0..1


def phases(q):
    return [(phase, start, end) for phase, start, end in runs(arm_primitives(q, FPS).phase)]


def test_right_arm_reaches_grasps_transfers_releases_and_retreats(expert_episode):
    right = phases(expert_episode[:, 7:])
    order = [p for p, _, _ in right if p is not Phase.IDLE and p is not Phase.HOLD]
    assert order == [Phase.REACH, Phase.GRASP, Phase.TRANSFER, Phase.RELEASE, Phase.RETREAT]
    grasp = next((s, e) for p, s, e in right if p is Phase.GRASP)
    release = next((s, e) for p, s, e in right if p is Phase.RELEASE)
    # The expert closes the right gripper over ticks 130-170 and opens it over 300-320.
    assert 120 <= grasp[0] <= 160 and release[0] >= 290


def test_left_arm_reaches_then_grasps_and_keeps_the_cube(expert_episode):
    left = phases(expert_episode[:, :7])
    moving = [p for p, _, _ in left if p is not Phase.IDLE]  # it waits for the cube midway
    order = [p for i, p in enumerate(moving) if i == 0 or p is not moving[i - 1]]
    assert order[:2] == [Phase.REACH, Phase.GRASP]
    assert Phase.RELEASE not in order, 'the left gripper never lets go of the cube'
    assert left[-1][0] in (Phase.HOLD, Phase.TRANSFER)
