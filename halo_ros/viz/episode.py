"""An episode bag as the report reads it: ticks, chunks, reasoning cycles, subgoals, diagnostics.

`recording.episode_reader.read_episode` gives the joints, texts, rewards and camera stamps; one more
pass over the bag decodes what it leaves out (chunk tags with their receive times, subgoal images,
diagnostics) and the few camera frames the report shows. Times are seconds on the bag's clock (ROS
time; simulated time under use_sim_time) from the first recorded message.
"""

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeMeta
from halo_ros.recording.episode_reader import (
    EpisodeData,
    episode_outcome,
    image_array,
    match_topic,
    read_episode,
)
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.viz.diagnostics import DiagnosticsSummary, summarize_diagnostics

log = logging.getLogger(__name__)

GOAL_CAMERA = 'cam_high'  # the camera HALO's subgoal images are trained on (emcot goal frames)


class EpisodeError(ValueError):
    """The folder is not a readable episode: missing, unfinished, damaged or empty."""


@dataclass(frozen=True)
class Ticks:
    """`halo/control_state`: one row per controller tick."""

    t_s: np.ndarray  # (N,) tick time
    mode: tuple[str, ...]
    phase: tuple[str, ...]
    intervention: np.ndarray  # (N,) bool
    chunk: tuple[tuple[int, int] | None, ...]  # (epoch, seq) of the chunk executing, if any
    limits: tuple[tuple[str, ...], ...]  # safety limits hit on the tick


@dataclass(frozen=True)
class ChunkRecord:
    tag: ChunkTag | None  # None: a chunk without a halo tag (another publisher)
    observation_s: float  # header stamp: the observation it was computed from
    received_s: float  # when the recorder got it (the bag's log time)
    started_s: float | None  # the tick it took over on; None if never executed

    @property
    def latency_ms(self) -> float:
        return (self.received_s - self.observation_s) * 1e3


@dataclass(frozen=True)
class ReasoningCycle:
    observation_ns: int  # the observation it reasoned about (its subgoal image's stamp)
    observation_s: float
    received_s: float
    latency_ms: float  # as the policy measured it
    subtask: str
    context_version: int
    accepted: bool  # False: the instruction changed while it ran, never used
    goal_s: float  # when its subtask ended: the moment the subgoal image was meant for
    subgoal: np.ndarray | None  # (H, W, 3) uint8, the imagined goal


@dataclass
class Episode:
    bag_dir: Path
    meta: EpisodeMeta
    success: bool | None
    final_reward: float | None
    start_ns: int  # time zero
    duration_s: float
    joint_names: tuple[str, ...]  # the 14 command joints
    command_t_s: np.ndarray  # (N,)
    command: np.ndarray  # (N, 14) what the controller sent
    measured: np.ndarray  # (N, 14) follower joints at the command stamps (NaN: not recorded)
    ticks: Ticks | None
    chunks: list[ChunkRecord]
    switches_s: np.ndarray  # (S,) ticks where a new chunk took over
    reasoning: list[ReasoningCycle]
    reward: tuple[np.ndarray, np.ndarray]  # (t_s, staged reward)
    success_s: float | None  # first sim/success
    diagnostics: DiagnosticsSummary
    camera_t_s: dict[str, np.ndarray]  # camera -> frame stamps
    frames: dict[tuple[str, int], np.ndarray]  # (camera, index) -> frame, those the report shows
    strip: dict[str, list[int]]  # camera -> frame indices of the camera strip

    def frame_near(self, camera: str, t_s: float) -> np.ndarray | None:
        """The decoded frame of `camera` nearest `t_s` (only frames loaded for the report)."""
        stamps = self.camera_t_s.get(camera)
        if stamps is None or not len(stamps):
            return None
        return self.frames.get((camera, _nearest(stamps, t_s)))


# What rosbags and numpy raise on garbled records (a length field read from garbage can overflow
# or ask for more memory than there is).
_READ_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    struct.error,
    EOFError,
    OSError,
    OverflowError,
    MemoryError,
    AssertionError,
)


def load_episode(bag_dir, *, strip_frames: int = 8, max_subgoals: int = 60) -> Episode:
    """Read a recorded episode; EpisodeError (naming the folder and why) if it cannot be."""
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    bag_dir = Path(bag_dir)
    _check_folder(bag_dir)
    errors = (ReaderError, SerdeError, *_READ_ERRORS)
    try:
        data = read_episode(bag_dir)
    except errors as error:
        raise EpisodeError(
            f'{bag_dir}: the bag cannot be read ({type(error).__name__}: {error})'
        ) from error
    command = data.joints.get('command')
    followers = [data.joints.get(arm) for arm in T.FOLLOWERS]
    if command is None or not len(command.stamp_ns):
        counts = {k: v for k, v in data.meta.message_counts.items() if v}
        raise EpisodeError(
            f'{bag_dir}: empty episode: no {T.COMMAND_TOPIC} messages to report on '
            f'(messages by topic: {counts or "none"})'
        )
    start_ns = int(data.meta.start_time_ns or command.stamp_ns[0])

    def seconds(ns):
        return (np.asarray(ns, np.int64) - start_ns) / 1e9

    command_t = seconds(command.stamp_ns)
    names = tuple(command.names)
    measured = _measured_at(names, command.stamp_ns, [f for f in followers if f is not None])
    ticks = _ticks(data, seconds)
    reasoning = _reasoning(data, seconds, end_s=float(command_t[-1]))
    if len(reasoning) > max_subgoals:  # keep the page light: an even sample of the cycles
        keep = set(np.linspace(0, len(reasoning) - 1, max_subgoals).round().astype(int))
    else:
        keep = set(range(len(reasoning)))
    camera_t = {cam: seconds(s) for cam, s in data.image_stamps_ns.items()}
    strip = {
        cam: sorted(set(np.linspace(0, len(t) - 1, strip_frames).round().astype(int).tolist()))
        for cam, t in camera_t.items()
        if len(t)
    }
    wanted = {cam: set(idx) for cam, idx in strip.items()}
    goal_t = camera_t.get(GOAL_CAMERA)
    if goal_t is not None and len(goal_t):
        for k in keep:
            cycle = reasoning[k]
            wanted[GOAL_CAMERA] |= {
                _nearest(goal_t, cycle.observation_s),
                _nearest(goal_t, cycle.goal_s),
            }
    try:
        extra = _second_pass(data, wanted)
    except errors as error:
        raise EpisodeError(
            f'{bag_dir}: the bag cannot be read ({type(error).__name__}: {error})'
        ) from error
    subgoals = extra['subgoals']
    reasoning = [
        _with_subgoal(c, subgoals.get(c.observation_ns)) if k in keep else c
        for k, c in enumerate(reasoning)
    ]
    chunks, switches = _chunks(extra['chunks'], ticks, seconds)
    success, final_reward = episode_outcome(data)
    reward = data.scalars.get('reward')
    flag = data.scalars.get('success')
    success_s = None
    if flag is not None and (flag.value > 0).any():
        success_s = float(seconds(flag.stamp_ns[np.argmax(flag.value > 0)]))
    return Episode(
        bag_dir=bag_dir,
        meta=data.meta,
        success=success,
        final_reward=final_reward,
        start_ns=start_ns,
        duration_s=float(max(command_t[-1], 0.0)),
        joint_names=names,
        command_t_s=command_t,
        command=command.position,
        measured=measured,
        ticks=ticks,
        chunks=chunks,
        switches_s=switches,
        reasoning=reasoning,
        reward=(seconds(reward.stamp_ns), reward.value) if reward else (np.zeros(0), np.zeros(0)),
        success_s=success_s,
        diagnostics=summarize_diagnostics(extra['diagnostics']),
        camera_t_s=camera_t,
        frames=extra['frames'],
        strip=strip,
    )


def _check_folder(bag_dir: Path) -> None:
    from halo_ros.recording.recover import is_complete, mcap_file

    if not bag_dir.is_dir():
        raise EpisodeError(f'{bag_dir}: no such episode folder')
    try:
        path = mcap_file(bag_dir)
    except FileNotFoundError as error:
        raise EpisodeError(f'{bag_dir}: not an episode bag ({error})') from None
    if not is_complete(path) or not (bag_dir / 'metadata.yaml').is_file():
        raise EpisodeError(
            f'{bag_dir}: unfinished bag ({path.name} has no MCAP footer or metadata.yaml is '
            'missing: its recorder did not close it); `halo-ros recover-episodes` finishes it'
        )


def _nearest(stamps: np.ndarray, t: float) -> int:
    k = int(np.searchsorted(stamps, t))
    if k == len(stamps) or (k > 0 and t - stamps[k - 1] <= stamps[k] - t):
        k -= 1
    return k


def _measured_at(names, stamps_ns, followers) -> np.ndarray:
    """Follower positions by joint name, interpolated at the command stamps."""
    out = np.full((len(stamps_ns), len(names)), np.nan)
    for stream in followers:
        for j, name in enumerate(stream.names):
            if name in names and len(stream.stamp_ns) > 1:
                column = names.index(name)
                out[:, column] = np.interp(stamps_ns, stream.stamp_ns, stream.position[:, j])
    return out


def _json_rows(data: EpisodeData, key: str) -> list[tuple[int, dict]]:
    stream = data.texts.get(key)
    if stream is None:
        return []
    rows = []
    for k, (stamp, text) in enumerate(zip(stream.stamp_ns, stream.text, strict=True)):
        try:
            rows.append((int(stamp), json.loads(text)))
        except json.JSONDecodeError as error:
            topic = {'control_state': T.CONTROL_STATE_TOPIC, 'reasoning': T.REASONING_TOPIC}[key]
            raise EpisodeError(
                f'{data.bag_dir}: {topic} message {k} is not JSON ({error}): {text[:80]!r}'
            ) from None
    return rows


def _ticks(data: EpisodeData, seconds) -> Ticks | None:
    rows = _json_rows(data, 'control_state')
    if not rows:
        return None

    def key(chunk):
        return None if not chunk else (int(chunk['epoch']), int(chunk['seq']))

    return Ticks(
        t_s=seconds([r.get('stamp_ns') or stamp for stamp, r in rows]),
        mode=tuple(r.get('mode', '') for _, r in rows),
        phase=tuple(r.get('phase', '') for _, r in rows),
        intervention=np.array([bool(r.get('intervention')) for _, r in rows]),
        chunk=tuple(key(r.get('chunk')) for _, r in rows),
        limits=tuple(tuple(r.get('limits') or ()) for _, r in rows),
    )


def _reasoning(data: EpisodeData, seconds, *, end_s: float) -> list[ReasoningCycle]:
    rows = _json_rows(data, 'reasoning')
    cycles = []
    for stamp, r in rows:
        observation = r.get('observation_stamp_ns') or stamp
        cycles.append(
            ReasoningCycle(
                observation_ns=int(observation),
                observation_s=float(seconds(observation)),
                received_s=float(seconds(stamp)),
                latency_ms=float(r.get('latency_ms', 0.0)),
                subtask=str(r.get('subtask', '')),
                context_version=int(r.get('context_version', -1)),
                accepted=bool(r.get('accepted', True)),
                goal_s=end_s,
                subgoal=None,
            )
        )
    # A subgoal is the last frame of its subtask (recording.emcot): it was meant for the moment
    # the policy moved on to another subtask, or the end of the episode if it never did.
    accepted = [k for k, c in enumerate(cycles) if c.accepted]
    for i, k in enumerate(accepted):
        later = (cycles[j] for j in accepted[i + 1 :])
        moved_on = next((c for c in later if c.subtask != cycles[k].subtask), None)
        if moved_on is not None:
            cycles[k] = _replace(cycles[k], goal_s=moved_on.observation_s)
    return cycles


def _replace(cycle: ReasoningCycle, **changes) -> ReasoningCycle:
    from dataclasses import replace

    return replace(cycle, **changes)


def _with_subgoal(cycle: ReasoningCycle, image) -> ReasoningCycle:
    return cycle if image is None else _replace(cycle, subgoal=image)


def _second_pass(data: EpisodeData, wanted_frames: dict[str, set[int]]) -> dict:
    """Chunk tags and receive times, subgoal images, diagnostics and the wanted camera frames."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    out = {'chunks': [], 'subgoals': {}, 'diagnostics': [], 'frames': {}}
    with Reader(data.bag_dir) as reader:
        topics = [c.topic for c in reader.connections]
        keys = {
            match_topic(topics, T.ACTION_CHUNK_TOPIC): 'chunk',
            match_topic(topics, T.SUBGOAL_IMAGE_TOPIC): 'subgoal',
            match_topic(topics, 'diagnostics'): 'diagnostics',
        }
        cameras = {match_topic(topics, T.image_topic(cam)): cam for cam in wanted_frames}
        keys.pop(None, None)
        cameras.pop(None, None)
        conns = [c for c in reader.connections if c.topic in keys or c.topic in cameras]
        seen = dict.fromkeys(cameras, 0)
        for conn, log_ns, raw in reader.messages(connections=conns):
            if conn.topic in cameras:
                cam, index = cameras[conn.topic], seen[conn.topic]
                seen[conn.topic] += 1
                if index in wanted_frames[cam]:
                    out['frames'][cam, index] = image_array(ts.deserialize_cdr(raw, T.IMAGE))
                continue
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            kind = keys[conn.topic]
            if kind == 'chunk':
                out['chunks'].append((_stamp(msg.header), log_ns, msg.header.frame_id))
            elif kind == 'subgoal':
                out['subgoals'][_stamp(msg.header)] = image_array(msg)
            else:
                out['diagnostics'].append((log_ns, msg.status))
    return out


def _stamp(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _chunks(raw_chunks, ticks: Ticks | None, seconds) -> tuple[list[ChunkRecord], np.ndarray]:
    """Chunk records with the tick each took over on; the switch times."""
    started: dict[tuple[int, int], float] = {}
    switches = []
    if ticks is not None:
        last = None
        for t, key in zip(ticks.t_s, ticks.chunk, strict=True):
            if key is not None and key != last:
                switches.append(float(t))
                started.setdefault(key, float(t))
                last = key
    records = []
    for stamp_ns, log_ns, frame_id in raw_chunks:
        try:
            tag = ChunkTag.parse(frame_id)
        except ValueError:
            tag = None
        records.append(
            ChunkRecord(
                tag=tag,
                observation_s=float(seconds(stamp_ns)),
                received_s=float(seconds(log_ns)),
                started_s=started.get((tag.epoch, tag.seq)) if tag else None,
            )
        )
    return records, np.array(switches)
