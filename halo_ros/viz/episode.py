"""An episode bag as the report reads it: ticks, chunks, reasoning cycles, subgoals, diagnostics.

`recording.episode_reader.read_episode` gives the joints, texts, rewards and camera stamps; one more
pass over the bag decodes what it leaves out (chunk tags with their receive times, subgoal images,
diagnostics) and the few camera frames the report shows. Times are seconds on the bag's clock (ROS
time; simulated time under use_sim_time) from the first recorded message.
"""

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeMeta
from halo_ros.recording.episode_reader import episode_outcome, read_episode
from halo_ros.viz import streams as S
from halo_ros.viz.diagnostics import DiagnosticsSummary, summarize_diagnostics
from halo_ros.viz.streams import ChunkRecord, EpisodeError, ReasoningCycle, Ticks

log = logging.getLogger(__name__)

GOAL_CAMERA = 'cam_high'  # the camera HALO's subgoal images are trained on (emcot goal frames)


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
    measured = S.measured_at(names, command.stamp_ns, [f for f in followers if f is not None])
    ticks = S.ticks(data, seconds)
    reasoning = S.reasoning(data, seconds, end_s=float(command_t[-1]))
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
        extra = S.second_pass(data, wanted)
    except errors as error:
        raise EpisodeError(
            f'{bag_dir}: the bag cannot be read ({type(error).__name__}: {error})'
        ) from error
    subgoals = extra['subgoals']
    reasoning = [
        S.with_subgoal(c, subgoals.get(c.observation_ns)) if k in keep else c
        for k, c in enumerate(reasoning)
    ]
    chunks, switches = S.chunks(extra['chunks'], ticks, seconds)
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
