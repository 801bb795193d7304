"""`halo/control_state`: what the controller did on one tick, the record its readers share.

The controller node publishes one per tick as a std_msgs/String of JSON (`ros2 topic echo`, a bag
and Foxglove show it as it is); the demo driver, the episode report, the controller benchmarks
and the dataset export read it back with `ControlState.from_json`, so the field names live here
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from halo_ros.control.modes import Mode, Phase
from halo_ros.json_record import JsonRecord, boolean, read_fields

if TYPE_CHECKING:
    from halo_ros.control.loop import TickRecord

TOPIC = 'halo/control_state'


@dataclass(frozen=True)
class ChunkPosition:
    """The chunk a tick executed and the point it was at (fractional: between two points)."""

    epoch: int
    seq: int
    index: float

    @property
    def key(self) -> tuple[int, int]:
        """(epoch, seq): names the chunk; consecutive ticks with different keys are a switch."""
        return self.epoch, self.seq

    @classmethod
    def from_dict(cls, d) -> ChunkPosition:
        return cls(**read_fields(d, f'{TOPIC} chunk', {'epoch': int, 'seq': int, 'index': float}))


@dataclass(frozen=True)
class ControlState(JsonRecord):
    TOPIC: ClassVar[str] = TOPIC

    tick: int
    stamp_ns: int  # the tick's start, ROS time
    mode: Mode
    phase: Phase
    intervention: bool  # the operator took over from the policy; cleared by engage_policy
    chunk: ChunkPosition | None  # the chunk executed; None outside POLICY or before one arrived
    limits: tuple[str, ...]  # the safety limits that changed this tick's command, sorted
    period_error_ms: float  # tick start against its schedule
    tick_ms: float  # from the start of the tick to the write done

    @classmethod
    def of(cls, record: TickRecord) -> ControlState:
        """The published form of the loop's tick record (rounded to what a reader can use)."""
        chunk = None
        if record.chunk is not None:
            epoch, seq, index = record.chunk
            chunk = ChunkPosition(epoch, seq, round(index, 3))
        return cls(
            tick=record.tick,
            stamp_ns=record.stamp_ns,
            mode=record.mode,
            phase=record.phase,
            intervention=record.intervention,
            chunk=chunk,
            limits=tuple(sorted(limit.value for limit in record.limits)),
            period_error_ms=round(record.period_error_ms, 3),
            tick_ms=round(record.tick_ms, 3),
        )

    def to_dict(self) -> dict:
        chunk = self.chunk
        return {
            'tick': self.tick,
            'stamp_ns': self.stamp_ns,
            'mode': self.mode.value,
            'phase': self.phase.value,
            'intervention': self.intervention,
            'chunk': None
            if chunk is None
            else {'epoch': chunk.epoch, 'seq': chunk.seq, 'index': chunk.index},
            'limits': list(self.limits),
            'period_error_ms': self.period_error_ms,
            'tick_ms': self.tick_ms,
        }

    @classmethod
    def from_dict(cls, d) -> ControlState:
        """RecordError (a ValueError) naming the field when one is missing or malformed."""
        fields = {
            'tick': int,
            'stamp_ns': int,
            'mode': Mode,
            'phase': Phase,
            'intervention': boolean,
            'chunk': lambda c: None if c is None else ChunkPosition.from_dict(c),
            'limits': lambda names: tuple(str(n) for n in names),
            'period_error_ms': float,
            'tick_ms': float,
        }
        return cls(**read_fields(d, TOPIC, fields))
