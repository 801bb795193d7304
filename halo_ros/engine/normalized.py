"""An engine whose model was trained on normalised actions, seen from the runtime in raw units.

The model's flow runs on (a - mean) / std (`model.action_norm`); everything outside it (the
runtime, the seam planner, the safety filter, the recorder) speaks joint radians. This wrapper
is the one place that converts: the seam's target goes in normalised, the chunk comes out raw.
The noise stays unit Gaussian, now in the space the flow was trained in. `load_engine` applies it
to every local backend; a remote engine gets it on the server.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from halo_ros.engine.interface import ActionResult, Engine, EngineInfo, Observation, Reasoning
from halo_ros.model.action_norm import ActionNorm


class NormalizedEngine(Engine):
    def __init__(self, inner: Engine, norm: ActionNorm) -> None:
        if norm.mean.shape != (inner.info.action_dim,):
            raise ValueError(
                f'action_norm has {norm.mean.shape[0]} joints, the engine {inner.info.action_dim}'
            )
        self.inner, self.norm = inner, norm

    @property
    def info(self) -> EngineInfo:
        return self.inner.info

    def act(
        self, observation: Observation, reasoning: Reasoning | None, noise: np.ndarray, seam=None
    ) -> ActionResult:
        if seam is not None:
            seam = dataclasses.replace(seam, target=self.norm.normalize(seam.target))
        result = self.inner.act(observation, reasoning, noise, seam)
        return dataclasses.replace(result, actions=self.norm.unnormalize(result.actions))

    def reason(self, observation, instruction, version, *, subgoal=True, max_tokens=64):
        return self.inner.reason(
            observation, instruction, version, subgoal=subgoal, max_tokens=max_tokens
        )

    def close(self) -> None:
        self.inner.close()
