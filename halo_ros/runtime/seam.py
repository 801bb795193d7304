"""Seam planning (numpy): which target the new chunk is steered to, and how strongly per index.

The plan is plain data: it is what `Engine.act` takes, each local backend turns it into its own
flow conditioning (`runtime.guidance.flow_conditioning`), and the remote client sends it as is.

Real-time chunking (Black, Galliker, Levine 2025; `anchors-openpi-rtc.md` §c3): the new chunk's
index 0 is the observation time. Its first d actions execute from the old chunk anyway (weight
1); after that the old plan's still-uncommitted actions get decaying weight up to the end of the
old chunk's valid tail (capped at H - s, s the execution horizon); beyond, weight 0. Hard
inpainting forces only the first d actions (the paper's "zeros" ablation). The target is the old
chunk's tail exactly as sampled (model space), padded by repeating its last action: a zero pad
would steer toward a meaningless pose.

Training-time real-time chunking (Black et al. 2025, "training-time action conditioning"): a
model trained with a random executed prefix given as clean actions (per-token flow time 0)
continues the prefix on its own, so the seam needs no guidance at inference: the first d actions
are the old chunk's, fixed through every flow step, and the rest is sampled as usual.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class SeamMode(enum.Enum):
    NONE = 'none'
    HARD = 'hard'
    RTC = 'rtc'
    PREFIX = 'prefix'  # training-time RTC: needs a checkpoint trained with prefix conditioning


DEFAULT_MAX_GUIDANCE = 10.0  # RTC beta: the paper used 5 with 5 steps; LeRobot 10 with 10 steps


class WeightSchedule(enum.Enum):
    EXP = 'exp'  # the paper's default
    LINEAR = 'linear'  # LeRobot's default; lower seam jumps in our harness (`seam_eval`)


@dataclass(frozen=True)
class SeamPlan:
    mode: SeamMode
    target: np.ndarray  # (H, A) float32, the old tail aligned to the new chunk's indices, padded
    weights: np.ndarray  # (H,) float32 in [0, 1]
    delay_steps: int  # d: the leading actions that execute from the old chunk regardless
    valid_steps: int  # how many rows of `target` are real (not padding)
    max_guidance: float = DEFAULT_MAX_GUIDANCE  # RTC's guidance clip (rtc only)

    def __post_init__(self):
        h = self.target.shape[0] if self.target.ndim == 2 else -1
        if self.weights.shape != (h,):
            raise ValueError(
                f'seam plan: target (H, A) and weights (H,) disagree: {self.target.shape}, '
                f'{self.weights.shape}'
            )
        if not 0 <= self.delay_steps <= h:
            raise ValueError(f'seam plan: delay_steps {self.delay_steps} outside 0..{h}')
        if self.max_guidance <= 0:
            raise ValueError(f'seam plan: max_guidance must be positive, got {self.max_guidance}')

    @property
    def prefix(self) -> np.ndarray:
        """(d, A): the actions that execute from the old chunk (prefix mode fixes them)."""
        return self.target[: self.delay_steps]


def pad_tail(tail: np.ndarray, length: int) -> np.ndarray:
    """(n, A) -> (length, A): truncate, or pad by repeating the last row (never zeros)."""
    if tail.ndim != 2 or tail.shape[0] == 0:
        raise ValueError(f'tail must be a non-empty (n, A) array, got shape {tail.shape}')
    if tail.shape[0] >= length:
        return tail[:length].copy()
    pad = np.repeat(tail[-1:], length - tail.shape[0], axis=0)
    return np.concatenate([tail, pad], axis=0)


def prefix_weights(
    delay_steps: int, soft_end: int, length: int, schedule: WeightSchedule = WeightSchedule.EXP
) -> np.ndarray:
    """W_i = 1 for i < d; c_i = (end - i) / (end - d + 1) decaying for d <= i < end (exp:
    c (e^c - 1) / (e - 1)); 0 from `soft_end` on. As `get_prefix_weights(d, H - s, H)`."""
    d = min(max(delay_steps, 0), length)
    end = min(max(soft_end, d), length)
    i = np.arange(length, dtype=np.float64)
    c = np.clip((end - i) / (end - d + 1), 0.0, 1.0)
    if schedule is WeightSchedule.EXP:
        c = c * np.expm1(c) / (math.e - 1)
    weights = np.where(i < d, 1.0, np.where(i < end, c, 0.0))
    return weights.astype(np.float32)


def plan_seam(
    mode: SeamMode,
    tail: np.ndarray,
    length: int,
    delay_steps: int,
    execution_steps: int,
    schedule: WeightSchedule = WeightSchedule.EXP,
    max_guidance: float = DEFAULT_MAX_GUIDANCE,
) -> SeamPlan | None:
    """The plan for the next chunk, or None when there is nothing to join (mode none, no tail).

    `tail` is (n, A): the commands the robot will execute at the new observation's time + k dt
    (`ExecutionFeedback.planned`). `execution_steps` is s, the steps one inference cycle lasts.
    """
    if mode is SeamMode.NONE or tail.shape[0] == 0:
        return None
    valid = min(tail.shape[0], length)
    d = min(max(delay_steps, 0), valid)
    if mode in (SeamMode.HARD, SeamMode.PREFIX):
        weights = (np.arange(length) < d).astype(np.float32)
    else:
        soft_end = min(valid, length - max(execution_steps, 1))
        weights = prefix_weights(d, soft_end, length, schedule)
    target = pad_tail(tail, length).astype(np.float32)
    return SeamPlan(mode, target, weights, d, valid, max_guidance)
