"""A stamped action chunk and how its bookkeeping travels in a standard message.

A chunk's actions are timed from the observation it was computed from: action k is meant for
`stamp_ns + k * dt_ns`. Epoch, sequence number and context version travel in the
JointTrajectory's `header.frame_id` as a compact tag, e.g. `halo:epoch=3;seq=41;ctx=7;d=2`:

- `epoch`: bumped on every instruction change (and reset); a consumer that has seen epoch e
  discards any chunk of an epoch < e.
- `seq`: increases by one per published chunk over the node's life (never reset), so a consumer
  sees reordering and loss.
- `ctx`: the reasoning context version the chunk was conditioned on (-1: none yet).
- `d`: the delay in control steps the seam was planned for (informative; the consumer aligns by
  stamp and drops at most the actions it actually executed since the stamp).

`frame_id` is otherwise meaningless for a joint-space trajectory (no Cartesian frame), keeps the
message standard (`ros2 topic echo`, rosbag2, Foxglove show it as is) and keeps the bookkeeping
atomic with the points (a side topic would need its own synchronisation). Unknown keys are ignored
by the parser so the tag can grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TAG_PREFIX = 'halo:'


@dataclass(frozen=True)
class ChunkTag:
    epoch: int
    seq: int
    context_version: int  # -1: computed before any reasoning context existed
    delay_steps: int = 0

    def format(self) -> str:
        return (
            f'{TAG_PREFIX}epoch={self.epoch};seq={self.seq};ctx={self.context_version};'
            f'd={self.delay_steps}'
        )

    @classmethod
    def parse(cls, text: str) -> ChunkTag:
        """Inverse of `format`; ValueError naming the text if it is not a halo chunk tag."""
        if not text.startswith(TAG_PREFIX):
            raise ValueError(f'chunk tag {text!r} does not start with {TAG_PREFIX!r}')
        fields = {}
        for item in text[len(TAG_PREFIX) :].split(';'):
            key, sep, value = item.partition('=')
            if not sep:
                raise ValueError(f'chunk tag {text!r}: item {item!r} is not key=value')
            fields[key.strip()] = value.strip()
        try:
            return cls(
                epoch=int(fields['epoch']),
                seq=int(fields['seq']),
                context_version=int(fields['ctx']),
                delay_steps=int(fields.get('d', 0)),
            )
        except KeyError as missing:
            raise ValueError(f'chunk tag {text!r} lacks {missing}') from None
        except ValueError:
            raise ValueError(f'chunk tag {text!r} has a non-integer field') from None


@dataclass(frozen=True)
class PolicyChunk:
    actions: np.ndarray  # (H, 14) float32, model space exactly as sampled (the RTC tail source)
    stamp_ns: int  # observation time; action k is for stamp_ns + k * dt_ns
    dt_ns: int  # control period
    tag: ChunkTag
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    def time_of(self, index: int) -> int:
        return self.stamp_ns + index * self.dt_ns
