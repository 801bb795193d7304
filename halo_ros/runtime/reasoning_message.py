"""`halo/reasoning`: one reasoning cycle as the policy publishes it, the record its readers share.

The policy node publishes one per cycle (accepted or not) as a std_msgs/String of JSON; the demo
driver and the episode report read it back with `ReasoningMessage.from_json`, so the field names
live here only. The subgoal image travels on its own topic, stamped with `observation_stamp_ns`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar

from halo_ros.json_record import JsonRecord, boolean, read_fields, string

if TYPE_CHECKING:
    from halo_ros.engine.interface import Reasoning

TOPIC = 'halo/reasoning'


@dataclass(frozen=True)
class ReasoningMessage(JsonRecord):
    TOPIC: ClassVar[str] = TOPIC

    plan: str
    subtask: str
    movement: str
    object: str  # where the object is ('cube at 41,63'); '' when the checkpoint does not say
    text: str  # the whole decoded thought (<|plan|>, <|subtask|>, <|movement|>)
    instruction: str
    context_version: int
    epoch: int
    accepted: bool  # False: the instruction changed while it ran (never used)
    observation_stamp_ns: int  # the observation it reasoned about
    latency_ms: float  # the whole cycle, as the policy measured it
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage

    @classmethod
    def of(cls, reasoning: Reasoning, *, accepted: bool, epoch: int) -> ReasoningMessage:
        return cls(
            plan=reasoning.plan,
            subtask=reasoning.subtask,
            movement=reasoning.movement,
            object=reasoning.object,
            text=reasoning.text,
            instruction=reasoning.instruction,
            context_version=reasoning.version,
            epoch=epoch,
            accepted=accepted,
            observation_stamp_ns=reasoning.observation_stamp_ns,
            latency_ms=round(reasoning.timings_ms.get('total', 0.0), 1),
            timings_ms={k: round(v, 1) for k, v in reasoning.timings_ms.items()},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> ReasoningMessage:
        """RecordError (a ValueError) naming the field when one is missing or malformed."""
        fields = {
            'plan': string,
            'subtask': string,
            'movement': string,
            'object': string,
            'text': string,
            'instruction': string,
            'context_version': int,
            'epoch': int,
            'accepted': boolean,
            'observation_stamp_ns': int,
            'latency_ms': float,
            'timings_ms': lambda t: {str(k): float(v) for k, v in t.items()},
        }
        return cls(**read_fields(d, TOPIC, fields))
