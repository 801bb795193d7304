"""Where the object is, as text the reasoning can carry: the grounded part of an EM-CoT thought.

Embodied chain-of-thought (ECoT) grounds its reasoning in the image: the objects it sees and
where. HALO's thought (plan, subtask, movement) says what to do but not where; at the start of a
transfer-cube episode the only thing that says where is a few pixels of cube on the top camera,
and a flow-matching action expert alone learns that far more slowly than the understanding
expert learns to *write* it under cross-entropy. So the annotation adds one tagged part,
`<|object|>cube at 41,63`: the object's centre in the grounding camera, in hundredths of the
image width and height, from the frame of that very tick. The reasoner learns to read it off the
camera; the actions condition on it like on the rest of the thought.

A `Grounder` finds the object in one frame. `ColorGrounder` thresholds a colour (the simulated
red cube); a detector (Grounding DINO, OWL-ViT, as ECoT uses) plugs in the same way for real
scenes: `--grounding package.module:Class`.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

NOT_SEEN = 'not seen'
_POSITION = re.compile(r'^(?P<name>.+?) at (?P<x>\d{1,2}),(?P<y>\d{1,2})$')


class Grounder(ABC):
    """Finds one named object in a frame."""

    name = 'abstract'  # what the object is called in the thought ('cube')

    @abstractmethod
    def locate(self, frame: np.ndarray) -> tuple[float, float] | None:
        """(x, y) of the object's centre in [0, 1) of the width and height of an (H, W, 3)
        uint8 RGB frame, or None when it is not visible."""

    def text(self, frame: np.ndarray) -> str:
        return object_text(self.name, self.locate(frame))


def object_text(name: str, xy: tuple[float, float] | None) -> str:
    """'cube at 41,63' (hundredths of width, height, 00..99) or 'cube not seen'."""
    if xy is None:
        return f'{name} {NOT_SEEN}'
    x, y = (min(max(int(v * 100), 0), 99) for v in xy)
    return f'{name} at {x:02d},{y:02d}'  # two digits each: tens, then ones, always


@dataclass(frozen=True)
class ObjectPosition:
    name: str
    xy: tuple[float, float] | None  # hundredths as fractions (0.41, 0.63); None: not seen


def parse_object_text(text: str) -> ObjectPosition | None:
    """The inverse of `object_text`; None when the text is neither form (a model's own words)."""
    text = text.strip()
    if text.endswith(' ' + NOT_SEEN):
        return ObjectPosition(text[: -len(NOT_SEEN) - 1], None)
    match = _POSITION.match(text)
    if match is None:
        return None
    return ObjectPosition(match['name'], (int(match['x']) / 100, int(match['y']) / 100))


class ColorGrounder(Grounder):
    """The centroid of the pixels of one saturated colour: red by default (gym-aloha's cube).
    A pixel counts when its `channel` exceeds `min_value` and `dominance` times each other one;
    fewer than `min_pixels` such pixels is 'not seen' (a cube hidden in a gripper)."""

    def __init__(
        self,
        name: str = 'cube',
        channel: int = 0,
        min_value: int = 100,
        dominance: float = 2.0,
        min_pixels: int = 3,
    ):
        self.name = name
        self.channel, self.min_value = channel, min_value
        self.dominance, self.min_pixels = dominance, min_pixels

    def locate(self, frame: np.ndarray) -> tuple[float, float] | None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB frame, got {frame.shape}')
        f = frame.astype(np.int16)
        c = f[..., self.channel]
        others = [f[..., k] for k in range(3) if k != self.channel]
        mask = c > self.min_value
        for o in others:
            mask &= c > self.dominance * o
        ys, xs = np.nonzero(mask)
        if len(xs) < self.min_pixels:
            return None
        h, w = frame.shape[:2]
        return (float(xs.mean()) + 0.5) / w, (float(ys.mean()) + 0.5) / h


GROUNDERS = {'red-cube': ColorGrounder}


def load_grounder(spec: str) -> Grounder | None:
    """'none', a built-in name ('red-cube'), or 'package.module:Class' of a Grounder subclass."""
    if spec == 'none':
        return None
    if spec in GROUNDERS:
        return GROUNDERS[spec]()
    module_name, _, class_name = spec.partition(':')
    if not class_name:
        raise ValueError(
            f"grounding must be 'none', one of {sorted(GROUNDERS)} or 'module:Class', got {spec!r}"
        )
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Grounder)):
        raise TypeError(f'{spec} is not a Grounder subclass')
    return cls()
