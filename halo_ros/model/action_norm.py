"""Per-joint action normalisation: the flow runs on (a - mean) / std instead of raw radians.

HALO's release trains on raw actions. Our demonstrations vary little where it matters (the
cube's position moves the first reach by ~0.05 rad, against unit flow noise), so a model on raw
actions can sample from the marginal over cube positions and lose almost nothing in its loss.
openpi, LeRobot, ACT and diffusion policy all normalise actions; a checkpoint trained that way
carries its statistics in `training.yaml` (`action_norm`), the engines apply them at their
boundary (`engine.normalized`), and one without them runs raw, as the release does.

numpy only: the robot side imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Smallest std a joint is scaled by: a joint that barely moves in the demonstrations must not
# turn the flow's unit noise into tiny, or a prefix's small offsets into huge, values.
MIN_STD = 0.05


@dataclass(frozen=True)
class ActionNorm:
    mean: np.ndarray  # (A,) float32
    std: np.ndarray  # (A,) float32, >= MIN_STD

    def __post_init__(self):
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(
                f'action_norm: mean {self.mean.shape} and std {self.std.shape} must be (A,)'
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
            raise ValueError('action_norm: mean and std must be finite')
        if (self.std <= 0).any():
            raise ValueError('action_norm: std must be positive')

    @classmethod
    def fit(cls, actions: list[np.ndarray]) -> ActionNorm:
        """Statistics over every tick of the demonstrations [(T, A), ...]."""
        rows = np.concatenate([np.asarray(a, np.float64) for a in actions])
        return cls(
            rows.mean(axis=0).astype(np.float32),
            np.maximum(rows.std(axis=0), MIN_STD).astype(np.float32),
        )

    @classmethod
    def from_card(cls, card: dict) -> ActionNorm | None:
        """A checkpoint card's statistics, or None (raw actions, as the release)."""
        entry = card.get('action_norm')
        if entry is None:
            return None
        return cls(np.asarray(entry['mean'], np.float32), np.asarray(entry['std'], np.float32))

    def to_card(self) -> dict:
        return {
            'kind': 'mean_std',
            'mean': [round(float(v), 6) for v in self.mean],
            'std': [round(float(v), 6) for v in self.std],
        }

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        return ((actions - self.mean) / self.std).astype(np.float32)

    def unnormalize(self, values: np.ndarray) -> np.ndarray:
        return (values * self.std + self.mean).astype(np.float32)
