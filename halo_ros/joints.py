"""Joint names and the 14-vector layout every part of halo_ros agrees on.

Per arm: six joints in radians and the gripper normalised 0 = closed .. 1 = open (through the
robot's calibration). Whole robot (state, action, chunk points): [left arm (7), right arm (7)].
"""

ARM_JOINTS = (
    'waist',
    'shoulder',
    'elbow',
    'forearm_roll',
    'wrist_angle',
    'wrist_rotate',
    'gripper',
)
SIDES = ('left', 'right')
ARMS = ('follower_left', 'follower_right', 'leader_left', 'leader_right')
GRIPPER_INDICES = (6, 13)  # in the 14-vector

# Names used in the 14-vector topics (halo/action_chunk, halo/command, sim/joint_states).
BIMANUAL_JOINTS = tuple(f'{side}_{joint}' for side in SIDES for joint in ARM_JOINTS)
DOF = len(BIMANUAL_JOINTS)  # 14


def arm_joint_names(arm: str) -> tuple[str, ...]:
    """Names in an arm's own JointState (`follower_left/joint_states`): 'left_waist', ..."""
    side = arm.rsplit('_', 1)[-1]
    if arm not in ARMS:
        raise ValueError(f'unknown arm {arm!r}; expected one of {ARMS}')
    return tuple(f'{side}_{joint}' for joint in ARM_JOINTS)
