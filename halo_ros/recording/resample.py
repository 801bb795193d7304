"""Resample an episode's streams onto the control-rate grid, from their real stamps.

Every stream is sampled *causally*: at grid time t each stream contributes its latest sample
stamped at or before t (what a policy running at t could have seen). The grid starts when every
required stream has produced a sample and ends at the earliest last sample, so no row is
extrapolated. Source stamps are kept beside the values so the alignment can be audited.
"""

import logging
from dataclasses import dataclass

import numpy as np

from halo_ros.control.control_state import ControlState
from halo_ros.json_record import RecordError
from halo_ros.recording import topics as T
from halo_ros.recording.episode_reader import EpisodeData, episode_outcome

logger = logging.getLogger(__name__)

CONTROL_HZ = 50.0  # HALO on the real robot: dt = 20 ms (design: chunks at the control period)


def latest_at_or_before(stamps_ns: np.ndarray, grid_ns: np.ndarray) -> np.ndarray:
    """Index into `stamps_ns` of the latest sample <= each grid time; -1 where none."""
    order = np.argsort(stamps_ns, kind='stable')
    pos = np.searchsorted(stamps_ns[order], grid_ns, side='right') - 1
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1)


@dataclass(frozen=True)
class AlignedEpisode:
    fps: float
    grid_ns: np.ndarray  # (T,) int64, absolute time of each row
    state: np.ndarray  # (T, 14) follower positions [left 7, right 7]
    velocity: np.ndarray  # (T, 14)
    effort: np.ndarray  # (T, 14)
    action: np.ndarray  # (T, 14) executed command (halo/command), else leader positions
    action_source: str  # 'command' or 'leaders'
    state_stamp_ns: np.ndarray  # (T, 2) source stamps of the left and right follower samples
    action_stamp_ns: np.ndarray  # (T,) or (T, 2) for leaders
    image_index: dict[str, np.ndarray]  # camera -> (T,) frame index in the bag
    image_stamp_ns: dict[str, np.ndarray]  # camera -> (T,) the frame's header stamp
    reward: np.ndarray  # (T,) float32, latest sim/reward (0 before the first)
    intervention: np.ndarray  # (T,) bool, from halo/control_state
    success: bool | None
    final_reward: float | None
    instruction: str

    @property
    def length(self) -> int:
        return len(self.grid_ns)


def _instruction(data: EpisodeData) -> str:
    if data.meta.instruction:
        return data.meta.instruction
    stream = data.texts.get('instruction')
    return stream.text[-1] if stream and stream.text else ''


def align_episode(
    data: EpisodeData, fps: float = CONTROL_HZ, cameras: tuple[str, ...] | None = None
) -> AlignedEpisode:
    for arm in T.FOLLOWERS:
        if arm not in data.joints:
            raise ValueError(f'{data.bag_dir}: no {arm} joint states; cannot build observations')
    cameras = tuple(c for c in (cameras or T.CAMERAS) if c in data.image_stamps_ns)
    if 'command' in data.joints:
        action_streams, action_source = [data.joints['command']], 'command'
    elif all(a in data.joints for a in T.LEADERS):
        action_streams, action_source = [data.joints[a] for a in T.LEADERS], 'leaders'
    else:
        raise ValueError(f'{data.bag_dir}: neither halo/command nor both leader arms recorded')
    followers = [data.joints[a] for a in T.FOLLOWERS]
    stamp_sets = [s.stamp_ns for s in followers + action_streams]
    stamp_sets += [data.image_stamps_ns[c] for c in cameras]
    start = max(int(s.min()) for s in stamp_sets)
    end = min(int(s.max()) for s in stamp_sets)
    if end < start:
        raise ValueError(f'{data.bag_dir}: the streams do not overlap in time')
    period_ns = round(1e9 / fps)
    grid = start + period_ns * np.arange((end - start) // period_ns + 1, dtype=np.int64)

    def sample(stream):
        idx = latest_at_or_before(stream.stamp_ns, grid)
        return idx, stream

    f_idx = [sample(s) for s in followers]
    state = np.concatenate([s.position[i] for i, s in f_idx], axis=1)
    velocity = np.concatenate([s.velocity[i] for i, s in f_idx], axis=1)
    effort = np.concatenate([s.effort[i] for i, s in f_idx], axis=1)
    state_stamps = np.stack([s.stamp_ns[i] for i, s in f_idx], axis=1)
    a_idx = [sample(s) for s in action_streams]
    action = np.concatenate([s.position[i] for i, s in a_idx], axis=1)
    action_stamps = np.stack([s.stamp_ns[i] for i, s in a_idx], axis=1)
    if action_stamps.shape[1] == 1:
        action_stamps = action_stamps[:, 0]
    if state.shape[1] != 14 or action.shape[1] != 14:
        raise ValueError(
            f'{data.bag_dir}: expected 14 state and action values, got '
            f'{state.shape[1]} and {action.shape[1]}'
        )

    image_index = {c: latest_at_or_before(data.image_stamps_ns[c], grid) for c in cameras}
    image_stamp = {c: data.image_stamps_ns[c][image_index[c]] for c in cameras}

    reward = np.zeros(len(grid), np.float32)
    if 'reward' in data.scalars:
        r = data.scalars['reward']
        idx = latest_at_or_before(r.stamp_ns, grid)
        reward = np.where(idx >= 0, r.value[np.maximum(idx, 0)], 0.0).astype(np.float32)
    intervention = np.zeros(len(grid), bool)
    if 'control_state' in data.texts:
        cs = data.texts['control_state']
        flags = np.array([_intervention(t) for t in cs.text])
        idx = latest_at_or_before(cs.stamp_ns, grid)
        intervention = np.where(idx >= 0, flags[np.maximum(idx, 0)], False)
    success, final_reward = episode_outcome(data)
    return AlignedEpisode(
        fps=fps,
        grid_ns=grid,
        state=state,
        velocity=velocity,
        effort=effort,
        action=action,
        action_source=action_source,
        state_stamp_ns=state_stamps,
        action_stamp_ns=action_stamps,
        image_index=image_index,
        image_stamp_ns=image_stamp,
        reward=reward,
        intervention=intervention,
        success=success,
        final_reward=final_reward,
        instruction=_instruction(data),
    )


def _intervention(control_state: str) -> bool:
    """The tick's intervention flag; an unreadable record counts as none (the export goes on)."""
    try:
        return ControlState.from_json(control_state).intervention
    except RecordError:
        return False
