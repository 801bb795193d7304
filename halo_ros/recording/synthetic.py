"""A synthetic pick-and-place episode with a known phase structure, as serialized ROS messages.

The right arm reaches (gripper open), grasps (gripper closes), transfers (moves with the gripper
closed), releases (gripper opens) and retreats; the left arm stays still. Stamps carry a little
jitter so nothing lands exactly on the control grid, as with real drivers. Used by tests, the
benchmark's dry run and as a worked example of the topic contract.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from halo_ros.recording import topics as T
from halo_ros.recording.topics import COMMAND_JOINT_NAMES, arm_joint_names

INSTRUCTION = 'pick up the cube and place it on the left'
START_POSE_RAD = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])


@dataclass(frozen=True)
class Phase:
    name: str
    duration_s: float


# (name, duration): the ground truth the annotation test checks against.
PICK_PLACE_PHASES = (
    Phase('reach', 1.0),
    Phase('grasp', 0.5),
    Phase('transfer', 1.2),
    Phase('release', 0.5),
    Phase('retreat', 0.8),
)


def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)  # zero velocity at both ends


def pick_place_state(t_s: float) -> np.ndarray:
    """The 14-vector [left 6, left gripper, right 6, right gripper] at time t."""
    left = np.concatenate([START_POSE_RAD, [1.0]])
    above_cube = START_POSE_RAD + np.array([0.3, 0.25, -0.2, 0.0, 0.2, 0.0])
    above_goal = START_POSE_RAD + np.array([-0.4, 0.1, -0.1, 0.0, 0.1, 0.2])
    bounds = np.cumsum([0.0] + [p.duration_s for p in PICK_PLACE_PHASES])
    k = int(np.searchsorted(bounds, t_s, side='right') - 1)
    k = min(max(k, 0), len(PICK_PLACE_PHASES) - 1)
    u = _smooth(np.array((t_s - bounds[k]) / PICK_PLACE_PHASES[k].duration_s))
    name = PICK_PLACE_PHASES[k].name if t_s < bounds[-1] else 'done'
    if name == 'reach':
        arm, grip = START_POSE_RAD + u * (above_cube - START_POSE_RAD), 1.0
    elif name == 'grasp':
        arm, grip = above_cube, 1.0 - 0.9 * u
    elif name == 'transfer':
        arm, grip = above_cube + u * (above_goal - above_cube), 0.1
    elif name == 'release':
        arm, grip = above_goal, 0.1 + 0.9 * u
    elif name == 'retreat':
        arm, grip = above_goal + u * (START_POSE_RAD - above_goal), 1.0
    else:
        arm, grip = START_POSE_RAD, 1.0
    return np.concatenate([left, arm, [float(grip)]])


def duration_s() -> float:
    return float(sum(p.duration_s for p in PICK_PLACE_PHASES))


def frame_pixels(camera_index: int, frame_index: int, height: int, width: int) -> np.ndarray:
    """An rgb8 frame whose pixels encode (camera, frame): R = 8 * frame mod 256, G = camera, B = 7.

    Steps of 8 keep neighbouring frames apart after lossy video coding.
    """
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (8 * frame_index) % 256
    img[..., 1] = camera_index
    img[..., 2] = 7
    return img


def pick_place_messages(
    *,
    start_ns: int = 1_700_000_000_000_000_000,
    image_hw=(48, 64),
    camera_hz: float = 30.0,
    joint_hz: float = 50.0,
    jitter_ms: float = 2.0,
    seed: int = 0,
    tail_s: float = 0.3,
    policy: bool = False,
) -> Iterator[tuple[str, str, int, int, bytes]]:
    """Yield (topic, msgtype, receive_ns, header_stamp_ns, cdr) in receive order.

    `policy`: also the policy and controller side (chunks, reasoning, subgoals, control state,
    diagnostics; see `synthetic_policy`), as in a recorded closed-loop episode.
    """
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    rng = np.random.default_rng(seed)
    Header = ts.types['std_msgs/msg/Header']
    Time = ts.types['builtin_interfaces/msg/Time']
    Image = ts.types[T.IMAGE]
    JointState = ts.types[T.JOINT_STATE]
    String = ts.types[T.STRING]
    Float32 = ts.types[T.FLOAT32]
    Bool = ts.types[T.BOOL]

    def header(stamp_ns: int, frame: str = ''):
        return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)

    total_s = duration_s() + tail_s
    events: list[tuple[int, int, str, str, object]] = []  # (recv, stamp, topic, type, msg)

    def jitter() -> int:
        return int(rng.uniform(-jitter_ms, jitter_ms) * 1e6)

    h, w = image_hw
    for ci, cam in enumerate(T.CAMERAS):
        for fi in range(int(total_s * camera_hz)):
            stamp = start_ns + int(fi / camera_hz * 1e9) + jitter() + ci * 1_000_000
            msg = Image(
                header=header(stamp, cam),
                height=h,
                width=w,
                encoding='rgb8',
                is_bigendian=0,
                step=w * 3,
                data=frame_pixels(ci, fi, h, w).reshape(-1),
            )
            events.append((stamp + 3_000_000, stamp, T.image_topic(cam), T.IMAGE, msg))
    zeros7 = np.zeros(7)
    for k in range(int(total_s * joint_hz)):
        nominal = start_ns + int(k / joint_hz * 1e9)
        state = pick_place_state((nominal - start_ns) / 1e9)
        for arm, side in (
            ('follower_left', 'left'),
            ('follower_right', 'right'),
            ('leader_left', 'left'),
            ('leader_right', 'right'),
        ):
            stamp = nominal + jitter()
            q = state[:7] if side == 'left' else state[7:]
            msg = JointState(
                header=header(stamp),
                name=arm_joint_names(side),
                position=q.astype(np.float64),
                velocity=zeros7.copy(),
                effort=np.full(7, 100.0 + k % 7),
            )
            events.append((stamp + 500_000, stamp, T.joint_state_topic(arm), T.JOINT_STATE, msg))
        cmd = JointState(
            header=header(nominal),
            name=list(COMMAND_JOINT_NAMES),
            position=state.astype(np.float64),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        events.append((nominal + 200_000, nominal, T.COMMAND_TOPIC, T.JOINT_STATE, cmd))
        if k % 50 == 0:
            events.append(
                (nominal + 100_000, nominal, T.MODE_TOPIC, T.STRING, String(data='POLICY'))
            )
            reward = min(4.0, 4.0 * (nominal - start_ns) / 1e9 / duration_s())
            events.append(
                (nominal + 100_000, nominal, T.REWARD_TOPIC, T.FLOAT32, Float32(data=reward))
            )
    events.append(
        (
            start_ns,
            start_ns,
            T.INSTRUCTION_TOPIC,
            T.STRING,
            String(data=INSTRUCTION),
        )
    )
    end = start_ns + int(total_s * 1e9)
    events.append((end, end, T.SUCCESS_TOPIC, T.BOOL, Bool(data=True)))
    if policy:
        from halo_ros.recording.synthetic_policy import policy_events

        events += policy_events(ts, header, start_ns, total_s, joint_hz, duration_s())
    events.sort(key=lambda e: e[0])
    for recv, stamp, topic, msgtype, msg in events:
        yield topic, msgtype, recv, stamp, bytes(ts.serialize_cdr(msg, msgtype))


def write_pick_place_episode(bag_dir, *, success: bool | None = True, **kwargs):
    """Record the synthetic episode into `bag_dir` with the episode writer; returns the
    messages as sent (see `pick_place_messages`)."""
    from pathlib import Path

    from halo_ros.recording.episode_meta import EpisodeMeta, Outcome
    from halo_ros.recording.episode_writer import EpisodeWriter

    sent = list(pick_place_messages(**kwargs))
    first = sent[0][2]
    clock = iter(range(first - 1000, first + 10**12, 1000))
    outcome = {True: Outcome.SUCCESS, False: Outcome.FAILURE, None: Outcome.UNKNOWN}[success]
    writer = EpisodeWriter(
        Path(bag_dir),
        EpisodeMeta(Path(bag_dir).name, robot='aloha-sim'),
        clock_ns=lambda: next(clock),
    )
    writer.start()
    for topic, msgtype, recv_ns, _, data in sent:
        writer.put(topic, msgtype, recv_ns, data)
    writer.update_meta(outcome=outcome)
    summary = writer.stop()
    if summary.dropped_messages:
        raise RuntimeError(f'synthetic episode dropped {summary.dropped_messages} messages')
    return sent
