"""What the report reads from each topic of an episode: controller ticks, chunks, reasoning.

Plain parsing of what `recording.episode_reader` returns, plus the one extra pass over the bag
for what it leaves out; `halo_ros.viz.episode` puts the pieces together.
"""

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from halo_ros.control.control_state import ControlState
from halo_ros.json_record import JsonRecord, RecordError
from halo_ros.recording import topics as T
from halo_ros.recording.episode_reader import EpisodeData, image_array, match_topic
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.runtime.reasoning_message import ReasoningMessage


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


def measured_at(names, stamps_ns, followers) -> np.ndarray:
    """Follower positions by joint name, interpolated at the command stamps."""
    out = np.full((len(stamps_ns), len(names)), np.nan)
    for stream in followers:
        for j, name in enumerate(stream.names):
            if name in names and len(stream.stamp_ns) > 1:
                column = names.index(name)
                out[:, column] = np.interp(stamps_ns, stream.stamp_ns, stream.position[:, j])
    return out


def _records(data: EpisodeData, key: str, schema: type[JsonRecord]) -> list[tuple[int, Any]]:
    """(log stamp, record) of every message of a JSON topic, parsed by its schema."""
    stream = data.texts.get(key)
    if stream is None:
        return []
    rows = []
    for k, (stamp, text) in enumerate(zip(stream.stamp_ns, stream.text, strict=True)):
        try:
            rows.append((int(stamp), schema.from_json(text)))
        except RecordError as error:
            raise EpisodeError(
                f'{data.bag_dir}: {schema.TOPIC} message {k} is unreadable: {error}'
            ) from None
    return rows


def ticks(data: EpisodeData, seconds) -> Ticks | None:
    rows: list[tuple[int, ControlState]] = _records(data, 'control_state', ControlState)
    if not rows:
        return None
    states = [state for _, state in rows]
    return Ticks(
        t_s=seconds([state.stamp_ns for state in states]),
        mode=tuple(state.mode.value for state in states),
        phase=tuple(state.phase.value for state in states),
        intervention=np.array([state.intervention for state in states]),
        chunk=tuple(None if state.chunk is None else state.chunk.key for state in states),
        limits=tuple(state.limits for state in states),
    )


def reasoning(data: EpisodeData, seconds, *, end_s: float) -> list[ReasoningCycle]:
    rows: list[tuple[int, ReasoningMessage]] = _records(data, 'reasoning', ReasoningMessage)
    cycles = []
    for stamp, r in rows:
        observation = r.observation_stamp_ns or stamp  # 0: a reasoning without an observation
        cycles.append(
            ReasoningCycle(
                observation_ns=observation,
                observation_s=float(seconds(observation)),
                received_s=float(seconds(stamp)),
                latency_ms=r.latency_ms,
                subtask=r.subtask,
                context_version=r.context_version,
                accepted=r.accepted,
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
    return replace(cycle, **changes)


def with_subgoal(cycle: ReasoningCycle, image) -> ReasoningCycle:
    return cycle if image is None else _replace(cycle, subgoal=image)


def second_pass(data: EpisodeData, wanted_frames: dict[str, set[int]]) -> dict:
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


def chunks(raw_chunks, ticks: Ticks | None, seconds) -> tuple[list[ChunkRecord], np.ndarray]:
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
