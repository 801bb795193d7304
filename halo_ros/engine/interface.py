"""What the runtime needs from an inference engine, whatever the backend.

One `Engine` serves two loops at once (the runtime calls them from two threads):

- `act` (fast loop, every chunk): prefill the fresh camera frames and the newest reasoning into a
  private KV cache, then run all flow steps of the action expert against it; one call.
- `reason` (slow loop, ~1 Hz or less): prefill the frames and the instruction, decode the
  reasoning text, optionally sample the subgoal latent (and decode it to an image for display).

Backends (`torch`, `onnxruntime`, `tensorrt`, and a remote client) implement this ABC; the
runtime never knows which one it talks to. Everything crosses this boundary as plain numpy
data, the seam too: `act` takes the runtime's `SeamPlan` (mode, target, weights, prefix length),
and each backend builds its own conditioning from it (torch guidance with a differentiable
velocity on backends that claim `supports_guidance_gradients`, a fixed clean prefix, or the plan
sent over the network as it is).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from halo_ros.runtime.seam import SeamPlan


@dataclass(frozen=True)
class Observation:
    """One synchronized observation. Stamps are ROS time in ns (the chunk carries it)."""

    stamp_ns: int
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8 RGB
    state: np.ndarray  # (14,) float32 follower joints; HALO takes no state input, others may


@dataclass(frozen=True)
class Reasoning:
    """The product of one reasoning cycle: what the fast loop conditions on."""

    version: int  # increases by one per cycle; chunks record the version they used
    instruction: str
    text: str  # the decoded reasoning as HALO writes it (<|plan|>, <|subtask|>, <|movement|>)
    plan: str = ''
    subtask: str = ''
    movement: str = ''
    object: str = ''  # where the object is ('cube at 41,63'), if the checkpoint grounds it
    subgoal_tokens: np.ndarray | None = None  # (T, 64) float32 latent tokens, already / 1.4
    subgoal_grid: tuple[int, int] | None = None  # latent grid (h, w) of those tokens
    subgoal_image: np.ndarray | None = None  # (H, W, 3) uint8, decoded for display only
    observation_stamp_ns: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


def make_reasoning(
    version: int, instruction: str, text: str, observation: Observation, timings_ms: dict, **subgoal
) -> Reasoning:
    """A Reasoning from decoded text (split into plan, subtask, object and movement), every
    backend's way; `subgoal` holds subgoal_tokens / subgoal_grid / subgoal_image when one was
    sampled."""
    from halo_ros.reasoning import parse_thought

    thought = parse_thought(text)
    return Reasoning(
        version=version,
        instruction=instruction,
        text=text,
        plan=thought.plan,
        subtask=thought.subtask,
        movement=thought.movement,
        object=thought.object,
        observation_stamp_ns=observation.stamp_ns,
        timings_ms=timings_ms,
        **subgoal,
    )


@dataclass(frozen=True)
class ActionResult:
    actions: np.ndarray  # (chunk_length, 14) float32, model space (joints rad, grippers 0..1)
    timings_ms: dict[str, float]  # per stage: 'vit', 'prefill', 'flow', 'total', ...


@dataclass(frozen=True)
class EngineInfo:
    """What a client must agree with before it sends anything (also the remote handshake)."""

    backend: str
    model_name: str
    model_hash: str
    action_dim: int
    chunk_length: int
    flow_steps: int
    cameras: tuple[str, ...]
    image_hw: tuple[int, int]  # frames are resized to this before the ViT
    supports_guidance_gradients: bool


class Engine(ABC):
    """A HALO engine. `act` and `reason` must be safe to call concurrently from two threads."""

    @property
    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def act(
        self,
        observation: Observation,
        reasoning: Reasoning | None,
        noise: np.ndarray,
        seam: SeamPlan | None = None,
    ) -> ActionResult:
        """One action chunk from this observation and the newest reasoning (None before the first
        cycle finished). `noise` is (chunk_length, action_dim) float32: the caller owns the
        randomness, so backends agree bit for bit on the same inputs. `seam` joins the chunk to
        the one executing (None: sample freely)."""

    @abstractmethod
    def reason(
        self,
        observation: Observation,
        instruction: str,
        version: int,
        *,
        subgoal: bool = True,
        max_tokens: int = 64,
    ) -> Reasoning:
        """One reasoning cycle; `version` is stamped into the result."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release sessions, GPU buffers, sockets."""


class EngineInputError(ValueError):
    """An input of the wrong shape, dtype or value; the message names the input."""


class GuidanceUnsupportedError(EngineInputError):
    """The backend cannot differentiate the action velocity (guided sampling needs it)."""


def check_observation(observation: Observation, info: EngineInfo) -> None:
    """Every camera the engine takes is there, at its image size, as uint8 RGB."""
    missing = set(info.cameras) - set(observation.images)
    if missing:
        raise EngineInputError(f'observation.images: missing cameras {sorted(missing)}')
    h, w = info.image_hw
    for name in info.cameras:
        check_array(f'observation.images[{name!r}]', observation.images[name], (h, w, 3), np.uint8)


class StageTimer:
    """Wall time per stage of one engine call, in ms: the `timings_ms` of its result."""

    def __init__(self):
        self._start = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = (time.perf_counter() - start) * 1e3

    def since_start(self, name: str) -> None:
        """Record the time from the call's start to now as `name` (e.g. input checks)."""
        self.ms[name] = (time.perf_counter() - self._start) * 1e3

    def done(self) -> dict[str, float]:
        self.since_start('total')
        return self.ms


def check_act_inputs(
    observation: Observation, noise: np.ndarray, seam: SeamPlan | None, info: EngineInfo
) -> None:
    """What every local backend checks before a chunk: cameras, noise shape, the seam plan."""
    check_observation(observation, info)
    check_array('noise', noise, (info.chunk_length, info.action_dim), np.float32)
    check_seam(seam, info)


def check_seam(seam: SeamPlan | None, info: EngineInfo) -> None:
    """A seam plan of this engine's chunk shape that the backend can follow."""
    if seam is None:
        return
    h, a = info.chunk_length, info.action_dim
    check_array('seam.target', seam.target, (h, a), np.float32)
    check_array('seam.weights', seam.weights, (h,), np.float32)
    if seam.mode.value == 'rtc' and not info.supports_guidance_gradients:
        raise GuidanceUnsupportedError(
            f'seam: mode rtc needs guidance gradients; the {info.backend} backend cannot '
            'differentiate the action velocity (export the action_step_vjp graph, or use seam '
            'mode prefix, hard or none)'
        )


def check_array(name: str, array: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """Raise EngineInputError naming `name` unless `array` has this shape (None = any) and dtype.
    Non-finite floats are rejected too: a NaN must never reach the arms."""
    if not isinstance(array, np.ndarray):
        raise EngineInputError(f'{name}: expected a numpy array, got {type(array).__name__}')
    if array.dtype != np.dtype(dtype):
        raise EngineInputError(f'{name}: expected dtype {np.dtype(dtype)}, got {array.dtype}')
    if len(array.shape) != len(shape) or any(
        s is not None and s != a for s, a in zip(shape, array.shape, strict=True)
    ):
        raise EngineInputError(f'{name}: expected shape {shape}, got {array.shape}')
    if array.dtype.kind == 'f' and not np.isfinite(array).all():
        raise EngineInputError(f'{name}: contains NaN or infinity')
    return array
