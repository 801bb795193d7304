"""The MuJoCo ALOHA scene: gym-aloha's bimanual ViperX assets, loaded and adjusted for our cameras.

gym-aloha ships the MJCF (two ViperX 300 S followers on a table, a cube or a peg and socket);
we load it with mujoco directly (no dm_control Environment: it renders three VGA cameras with
shadows on every step, 8 steps/s here) and change what a real ALOHA differs in:

- the wrist cameras: the stock ones have a 20 degree field of view aimed at a point in front of the
  gripper, so they mostly see the gripper housing; ALOHA's wrist cameras (RealSense D405) see the
  fingers and the workspace with a ~87 x 58 degree field of view, mounted above the gripper;
- shadows off: the shadow map dominates software rendering (3 x VGA: 9 sets/s with, 31 without).
"""

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import mujoco
import numpy as np


class Task(Enum):
    TRANSFER_CUBE = 'transfer_cube'
    INSERTION = 'insertion'


def assets_dir() -> Path:
    import gym_aloha  # imported lazily: only the simulator needs it

    return Path(gym_aloha.__file__).parent / 'assets'


ARM_SIDES = ('left', 'right')
JOINTS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate')

# ROS camera name -> MJCF camera name.
CAMERAS = {'cam_high': 'top', 'cam_left_wrist': 'left_wrist', 'cam_right_wrist': 'right_wrist'}

# Wrist camera on the gripper frame (x forward along the fingers, z up): 3 cm ahead of and 7 cm
# above the gripper link, pitched down 35 degrees so the fingertips sit low in the image.
_WRIST_CAMERA_POS = (0.03, 0.0, 0.07)
_WRIST_CAMERA_FOVY_DEG = 58.0  # D405 vertical field of view

# Finger travel of the ViperX gripper in the MJCF (slide joints, metres), gym-aloha's constants.
FINGER_OPEN_M = 0.05800
FINGER_CLOSED_M = 0.01844

# The point between the finger pads in the gripper link frame, where a grasped object sits.
TCP_IN_GRIPPER = np.array([0.13, 0.0, 0.0])  # fingertips end at x = 0.154


@dataclass(frozen=True)
class ArmIndex:
    """Where one follower arm lives inside MjModel/MjData."""

    qpos: np.ndarray  # (6,) qpos addresses of the arm joints
    dof: np.ndarray  # (6,) dof addresses of the arm joints
    finger_qpos: int  # qpos address of the left finger slide (the right one mirrors it)
    finger_dof: int
    actuators: np.ndarray  # (8,) 6 joints + left finger + right finger
    joint_range: np.ndarray  # (6, 2)
    gripper_body: int


def _wrist_camera_quat() -> np.ndarray:
    # MuJoCo cameras look down their -z axis with +y up. Turn that into "looking along the gripper's
    # +x, pitched down 30 degrees": rotate -90 about x... composed as explicit frame axes.
    pitch = np.deg2rad(35.0)
    forward = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])  # camera -z
    up = np.array([np.sin(pitch), 0.0, np.cos(pitch)])  # camera +y
    z = -forward
    x = np.cross(up, z)
    mat = np.stack([x, up, z], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.flatten())
    return quat


def load_model(task: Task = Task.TRANSFER_CUBE) -> mujoco.MjModel:
    xml = assets_dir() / f'bimanual_viperx_{task.value}.xml'
    spec = mujoco.MjSpec.from_file(str(xml))
    quat = _wrist_camera_quat()
    for side in ARM_SIDES:
        camera = spec.camera(f'{side}_wrist')
        camera.mode = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
        camera.pos = _WRIST_CAMERA_POS
        camera.quat = quat
        camera.fovy = _WRIST_CAMERA_FOVY_DEG
    for light in spec.lights:
        light.castshadow = False
    # The near clipping plane is a fraction of the scene extent (0.1 in the asset, ~15 cm): the
    # fingers, 8-15 cm in front of a wrist camera, would be clipped away.
    spec.visual.map.znear = 0.01
    return spec.compile()


def arm_index(model: mujoco.MjModel, side: str) -> ArmIndex:
    prefix = f'vx300s_{side}/'
    joints = [model.joint(prefix + name) for name in JOINTS]
    finger = model.joint(prefix + 'left_finger')
    actuators = []
    for name in (*JOINTS, 'left_finger', 'right_finger'):
        joint_id = model.joint(prefix + name).id
        actuators.append(int(np.flatnonzero(model.actuator_trnid[:, 0] == joint_id)[0]))
    return ArmIndex(
        qpos=np.array([j.qposadr[0] for j in joints]),
        dof=np.array([j.dofadr[0] for j in joints]),
        finger_qpos=int(finger.qposadr[0]),
        finger_dof=int(finger.dofadr[0]),
        actuators=np.array(actuators),
        joint_range=np.array([j.range for j in joints]),
        gripper_body=model.body(prefix + 'gripper_link').id,
    )
