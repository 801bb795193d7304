"""The topics a recorder takes by default, with their message types.

Names are relative so a namespace moves them. Types are rosbag2 type names (`pkg/msg/Name`),
the names the Jazzy typestore and the MCAP schema records use.
"""

from dataclasses import dataclass

IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
JOINT_STATE = 'sensor_msgs/msg/JointState'
JOINT_TRAJECTORY = 'trajectory_msgs/msg/JointTrajectory'
STRING = 'std_msgs/msg/String'
FLOAT32 = 'std_msgs/msg/Float32'
BOOL = 'std_msgs/msg/Bool'
DIAGNOSTIC_ARRAY = 'diagnostic_msgs/msg/DiagnosticArray'

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
FOLLOWERS = ('follower_left', 'follower_right')
LEADERS = ('leader_left', 'leader_right')

# Written by the recorder itself, once at start and once at stop (the last one wins).
EPISODE_META_TOPIC = 'halo/episode_meta'
INSTRUCTION_TOPIC = 'halo/instruction'
ACTION_CHUNK_TOPIC = 'halo/action_chunk'
COMMAND_TOPIC = 'halo/command'
CONTROL_STATE_TOPIC = 'halo/control_state'
MODE_TOPIC = 'halo/mode'
REASONING_TOPIC = 'halo/reasoning'
SUBGOAL_IMAGE_TOPIC = 'halo/subgoal/image_raw'
REWARD_TOPIC = 'sim/reward'
SUCCESS_TOPIC = 'sim/success'


ARM_JOINTS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate')


def arm_joint_names(side: str) -> list[str]:
    return [f'{side}_{j}' for j in ARM_JOINTS] + [f'{side}_gripper']


# The 14-vector: [left 6 joints, left gripper, right 6 joints, right gripper].
COMMAND_JOINT_NAMES = tuple(arm_joint_names('left') + arm_joint_names('right'))


def image_topic(camera: str) -> str:
    return f'{camera}/image_raw'


def camera_info_topic(camera: str) -> str:
    return f'{camera}/camera_info'


def joint_state_topic(arm: str) -> str:
    return f'{arm}/joint_states'


@dataclass(frozen=True)
class OfferedQos:
    """What one publisher offers, as rosbag2 stores it so `ros2 bag play` can offer the same."""

    reliable: bool
    transient_local: bool
    depth: int


@dataclass(frozen=True)
class RecordedTopic:
    """A topic the recorder subscribes to."""

    name: str  # relative or absolute ROS name
    msgtype: str  # rosbag2 type name, e.g. 'sensor_msgs/msg/Image'


DEFAULT_TOPICS: tuple[RecordedTopic, ...] = (
    *(RecordedTopic(image_topic(c), IMAGE) for c in CAMERAS),
    *(RecordedTopic(camera_info_topic(c), CAMERA_INFO) for c in CAMERAS),
    *(RecordedTopic(joint_state_topic(a), JOINT_STATE) for a in FOLLOWERS + LEADERS),
    RecordedTopic(ACTION_CHUNK_TOPIC, JOINT_TRAJECTORY),
    RecordedTopic(COMMAND_TOPIC, JOINT_STATE),
    RecordedTopic(CONTROL_STATE_TOPIC, STRING),
    RecordedTopic(MODE_TOPIC, STRING),
    RecordedTopic(REASONING_TOPIC, STRING),
    RecordedTopic(SUBGOAL_IMAGE_TOPIC, IMAGE),
    RecordedTopic(INSTRUCTION_TOPIC, STRING),
    RecordedTopic(REWARD_TOPIC, FLOAT32),
    RecordedTopic(SUCCESS_TOPIC, BOOL),
    RecordedTopic('diagnostics', DIAGNOSTIC_ARRAY),
)

KNOWN_TYPES: dict[str, str] = {t.name: t.msgtype for t in DEFAULT_TOPICS}


def ros_type_name(msgtype: str) -> tuple[str, str]:
    """'sensor_msgs/msg/Image' -> ('sensor_msgs.msg', 'Image'), the module and class to import."""
    package, kind, name = msgtype.split('/')
    return f'{package}.{kind}', name


def bag_type_name(ros_type: str) -> str:
    """A graph type name ('sensor_msgs/msg/Image') is already the bag name; this validates it."""
    parts = ros_type.split('/')
    if len(parts) != 3 or parts[1] != 'msg':
        raise ValueError(f'not a message type name: {ros_type!r} (expected pkg/msg/Name)')
    return ros_type
