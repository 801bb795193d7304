"""Read an episode bag back as arrays with their real stamps.

Small messages are decoded at open; camera frames are indexed by stamp at open (read from the
CDR header without decoding the pixels) and decoded only when asked for, in bag order, so an
episode of several GB never sits in memory.

Topics are matched by their relative name, so a bag recorded under a namespace
(`/robot1/cam_high/image_raw`) reads the same as one without.

Stamps: `stamp_ns` is the message's header stamp (capture time) where it has a header, else the
bag's receive time.
"""

import json
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeMeta, read_sidecar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointStream:
    stamp_ns: np.ndarray  # (N,) int64
    position: np.ndarray  # (N, J) float64
    velocity: np.ndarray  # (N, J) float64, zeros where the message had none
    effort: np.ndarray  # (N, J) float64, zeros where the message had none
    names: tuple[str, ...]


@dataclass(frozen=True)
class TextStream:
    stamp_ns: np.ndarray  # (N,) int64, receive time (String has no header)
    text: tuple[str, ...]


@dataclass(frozen=True)
class ScalarStream:
    stamp_ns: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) float64


@dataclass(frozen=True)
class ActionChunk:
    stamp_ns: int  # observation time the chunk was computed from
    time_from_start_s: np.ndarray  # (H,)
    positions: np.ndarray  # (H, J)
    names: tuple[str, ...]


@dataclass
class EpisodeData:
    bag_dir: Path
    meta: EpisodeMeta
    joints: dict[str, JointStream]  # 'follower_left', ..., 'command'
    image_stamps_ns: dict[str, np.ndarray]  # camera -> (N,) int64
    texts: dict[str, TextStream]  # 'mode', 'reasoning', 'instruction', 'control_state'
    scalars: dict[str, ScalarStream]  # 'reward', 'success'
    action_chunks: list[ActionChunk] = field(default_factory=list)
    _image_topics: dict[str, str] = field(default_factory=dict)

    def frames(self, camera: str, indices) -> Iterator[tuple[int, np.ndarray]]:
        """(index, (H, W, 3) uint8) for the wanted frame indices of a camera, ascending."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(Stores.ROS2_JAZZY)
        topic = self._image_topics[camera]
        pos = 0
        with Reader(self.bag_dir) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            for k, (_, _, raw) in enumerate(reader.messages(connections=conns)):
                if k != wanted[pos]:
                    continue
                yield k, image_array(ts.deserialize_cdr(raw, T.IMAGE))
                pos += 1
                if pos == len(wanted):
                    return
        raise IndexError(f'{camera}: frame {wanted[pos]} not in {self.bag_dir}')


def image_array(msg) -> np.ndarray:
    """An Image message as (H, W, 3) uint8 RGB."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'image encoding {msg.encoding!r} not supported (rgb8 or bgr8)')
    data = np.asarray(msg.data, dtype=np.uint8)
    img = data.reshape(msg.height, msg.step)[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return img[..., ::-1].copy() if msg.encoding == 'bgr8' else img


def header_stamp_ns(raw: bytes) -> int:
    """The header stamp of a CDR message whose first field is std_msgs/Header."""
    little = raw[1] == 1  # CDR encapsulation: 0x0001 little endian, 0x0000 big endian
    sec, nanosec = struct.unpack_from('<iI' if little else '>iI', raw, 4)
    return sec * 10**9 + nanosec


def match_topic(topics, relative: str) -> str | None:
    """The bag topic for a relative name: exact, with a leading '/', or under a namespace."""
    relative = relative.lstrip('/')
    hits = [t for t in topics if t.lstrip('/') == relative or t.endswith('/' + relative)]
    hits.sort(key=len)  # the shortest (least namespaced) wins
    return hits[0] if hits else None


_JOINT_STREAMS = {arm: T.joint_state_topic(arm) for arm in T.FOLLOWERS + T.LEADERS}
_JOINT_STREAMS['command'] = T.COMMAND_TOPIC
_TEXT_STREAMS = {
    'mode': T.MODE_TOPIC,
    'reasoning': T.REASONING_TOPIC,
    'instruction': T.INSTRUCTION_TOPIC,
    'control_state': T.CONTROL_STATE_TOPIC,
    'episode_meta': T.EPISODE_META_TOPIC,
}


def read_episode(bag_dir: Path) -> EpisodeData:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    bag_dir = Path(bag_dir)
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag_dir) as reader:
        topics = {c.topic: c for c in reader.connections}
        by_topic: dict[str, str] = {}  # bag topic -> stream key
        wanted = {
            **{k: v for k, v in _JOINT_STREAMS.items()},
            **{k: v for k, v in _TEXT_STREAMS.items()},
            'reward': T.REWARD_TOPIC,
            'success': T.SUCCESS_TOPIC,
            'action_chunk': T.ACTION_CHUNK_TOPIC,
            **{f'cam:{c}': T.image_topic(c) for c in T.CAMERAS},
        }
        for key, rel in wanted.items():
            topic = match_topic(topics, rel)
            if topic is not None:
                by_topic[topic] = key
        rows: dict[str, list] = {k: [] for k in by_topic.values()}
        conns = [topics[t] for t in by_topic]
        for conn, log_ns, raw in reader.messages(connections=conns):
            key = by_topic[conn.topic]
            if key.startswith('cam:'):
                rows[key].append(header_stamp_ns(raw))
            else:
                rows[key].append((log_ns, ts.deserialize_cdr(raw, conn.msgtype)))

    joints = {}
    for key in _JOINT_STREAMS:
        if rows.get(key):
            joints[key] = _joint_stream(rows[key])
    texts = {
        key: TextStream(
            np.array([r[0] for r in rows[key]], np.int64), tuple(r[1].data for r in rows[key])
        )
        for key in _TEXT_STREAMS
        if rows.get(key)
    }
    scalars = {
        key: ScalarStream(
            np.array([r[0] for r in rows[key]], np.int64),
            np.array([float(r[1].data) for r in rows[key]]),
        )
        for key in ('reward', 'success')
        if rows.get(key)
    }
    chunks = [_action_chunk(m) for _, m in rows.get('action_chunk', [])]
    image_stamps = {
        key[4:]: np.array(rows[key], np.int64) for key in rows if key.startswith('cam:')
    }
    image_topics = {
        by_topic_key[4:]: topic
        for topic, by_topic_key in by_topic.items()
        if by_topic_key.startswith('cam:')
    }
    return EpisodeData(
        bag_dir=bag_dir,
        meta=_episode_meta(bag_dir, texts),
        joints=joints,
        image_stamps_ns=image_stamps,
        texts=texts,
        scalars=scalars,
        action_chunks=chunks,
        _image_topics=image_topics,
    )


def _stamp(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _joint_stream(rows) -> JointStream:
    first = rows[0][1]
    n_joints = len(first.position)

    def column(name):
        out = np.zeros((len(rows), n_joints))
        for i, (_, m) in enumerate(rows):
            v = getattr(m, name)
            if len(v) == n_joints:
                out[i] = v
        return out

    stamps = np.array([_stamp(m.header) or log for log, m in rows], np.int64)
    return JointStream(
        stamps, column('position'), column('velocity'), column('effort'), tuple(first.name)
    )


def _action_chunk(msg) -> ActionChunk:
    tfs = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    pos = np.array([p.positions for p in msg.points], dtype=np.float64)
    return ActionChunk(_stamp(msg.header), tfs, pos, tuple(msg.joint_names))


def _episode_meta(bag_dir: Path, texts: dict[str, TextStream]) -> EpisodeMeta:
    stream = texts.get('episode_meta')
    if stream is not None and stream.text:
        try:
            return EpisodeMeta.from_json(stream.text[-1])
        except (ValueError, json.JSONDecodeError) as err:
            logger.warning('%s: unreadable halo/episode_meta (%s); using the sidecar', bag_dir, err)
    try:
        meta = read_sidecar(bag_dir)
    except FileNotFoundError:
        return EpisodeMeta(episode_id=bag_dir.name)
    return meta


def episode_outcome(data: EpisodeData) -> tuple[bool | None, float | None]:
    """(success, final reward): the operator's mark wins, else the simulator's signals."""
    from halo_ros.recording.episode_meta import Outcome

    # The sidecar may have been marked after the bag was closed.
    try:
        meta = read_sidecar(data.bag_dir)
    except FileNotFoundError:
        meta = data.meta
    reward = meta.reward
    if reward is None and 'reward' in data.scalars:
        reward = float(data.scalars['reward'].value[-1])
    if meta.outcome is not Outcome.UNKNOWN:
        return meta.outcome is Outcome.SUCCESS, reward
    if 'success' in data.scalars:
        return bool(data.scalars['success'].value.max() > 0), reward
    return None, reward
