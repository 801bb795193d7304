"""The two JSON records on the graph (halo/control_state, halo/reasoning): one schema each."""

import json

import numpy as np
import pytest

from halo_ros.control.control_state import ControlState
from halo_ros.control.loop import TickRecord
from halo_ros.control.modes import Mode, Phase
from halo_ros.control.safety import Limit
from halo_ros.engine.interface import Reasoning
from halo_ros.json_record import RecordError
from halo_ros.runtime.reasoning_message import ReasoningMessage


def _tick_record(**changes) -> TickRecord:
    fields = dict(
        tick=7,
        stamp_ns=1_700_000_000_123_456_789,
        mode=Mode.POLICY,
        phase=Phase.FOLLOWING_CHUNK,
        intervention=False,
        chunk=(2, 41, 3.14159),
        limits=frozenset({Limit.VELOCITY, Limit.POSITION}),
        command=np.zeros(14),
        states={},
        read_stamps_ns={},
        period_error_ms=0.12345,
        tick_ms=1.98765,
    )
    return TickRecord(**(fields | changes))


def test_the_control_state_of_a_tick_is_the_published_json():
    """The wire format the bags already hold: key order, rounding, enum values, sorted limits."""
    text = ControlState.of(_tick_record()).to_json()
    assert text == json.dumps(
        {
            'tick': 7,
            'stamp_ns': 1_700_000_000_123_456_789,
            'mode': 'POLICY',
            'phase': 'following_chunk',
            'intervention': False,
            'chunk': {'epoch': 2, 'seq': 41, 'index': 3.142},
            'limits': ['position', 'velocity'],
            'period_error_ms': 0.123,
            'tick_ms': 1.988,
        }
    )
    state = ControlState.from_json(text)
    assert state == ControlState.of(_tick_record())
    assert state.mode is Mode.POLICY and state.chunk.key == (2, 41)
    idle = ControlState.of(_tick_record(chunk=None, limits=frozenset(), mode=Mode.HOLD))
    assert ControlState.from_json(idle.to_json()) == idle and idle.chunk is None


@pytest.mark.parametrize(
    'change, says',
    [
        (lambda d: d.pop('tick_ms'), 'no field tick_ms'),
        (lambda d: d.update(mode='SPRINT'), "field mode='SPRINT'"),
        (lambda d: d.update(intervention='false'), 'field intervention'),
        (lambda d: d.update(chunk={'epoch': 1}), 'no field seq'),
        (lambda d: d.update(tick='seven'), "field tick='seven'"),
    ],
    ids=['missing', 'unknown-mode', 'string-bool', 'chunk-field', 'bad-int'],
)
def test_a_malformed_control_state_names_its_topic_and_field(change, says):
    record = ControlState.of(_tick_record()).to_dict()
    change(record)
    with pytest.raises(RecordError, match='halo/control_state') as error:
        ControlState.from_dict(record)
    assert says in str(error.value)


def test_text_that_is_not_a_json_object_is_a_record_error():
    with pytest.raises(RecordError, match='halo/control_state: not JSON'):
        ControlState.from_json('{tick')
    with pytest.raises(RecordError, match='halo/reasoning: not a JSON object'):
        ReasoningMessage.from_json('[1, 2]')


def test_a_reasoning_cycle_round_trips_with_the_published_fields():
    reasoning = Reasoning(
        version=3,
        instruction='transfer the cube',
        text='<|plan|>grasp; lift<|subtask|>grasp the cube<|object|>cube at 41,63'
        '<|movement|>[LEFT]: hold [RIGHT]: close',
        plan='grasp; lift',
        subtask='grasp the cube',
        movement='[LEFT]: hold [RIGHT]: close',
        object='cube at 41,63',
        observation_stamp_ns=123,
        timings_ms={'total': 812.345, 'vit': 40.04},
    )
    message = ReasoningMessage.of(reasoning, accepted=True, epoch=2)
    record = json.loads(message.to_json())
    assert list(record) == [
        'plan',
        'subtask',
        'movement',
        'object',
        'text',
        'instruction',
        'context_version',
        'epoch',
        'accepted',
        'observation_stamp_ns',
        'latency_ms',
        'timings_ms',
    ]
    assert record['latency_ms'] == 812.3 and record['timings_ms'] == {'total': 812.3, 'vit': 40.0}
    assert record['context_version'] == 3 and record['epoch'] == 2
    assert record['object'] == 'cube at 41,63'
    assert ReasoningMessage.from_json(message.to_json()) == message
    del record['accepted']
    with pytest.raises(RecordError, match='halo/reasoning: no field accepted'):
        ReasoningMessage.from_dict(record)
    with pytest.raises(RecordError, match='field subtask=None'):
        ReasoningMessage.from_dict(message.to_dict() | {'subtask': None})
