"""Reading a JSON record back from a std_msgs/String topic: one error for every way it can fail.

`halo/control_state` (`control.control_state`) and `halo/reasoning` (`runtime.reasoning_message`)
are String messages holding one JSON object each; their schemas parse with these helpers, so a
reader gets a `RecordError` naming the topic and the field instead of a bare KeyError.
"""

import json
from collections.abc import Callable, Mapping
from typing import ClassVar


class RecordError(ValueError):
    """A message that does not match its topic's schema: not JSON, or a field missing or bad."""


class JsonRecord:
    """`to_json` / `from_json` around a record's `to_dict` / `from_dict`; `TOPIC` names its topic
    in the errors."""

    TOPIC: ClassVar[str]

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d):
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str):
        """RecordError (a ValueError) when the text is not this record."""
        return cls.from_dict(parse_object(text, cls.TOPIC))


def parse_object(text: str, topic: str) -> dict:
    """The JSON object in a message's text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f'{topic}: not JSON ({error}): {text[:80]!r}') from None
    if not isinstance(value, dict):
        raise RecordError(f'{topic}: not a JSON object: {text[:80]!r}')
    return value


def read_fields(record: Mapping, topic: str, fields: Mapping[str, Callable]) -> dict:
    """Each field converted by its function (`int`, an Enum, ...); every field is required."""
    missing = [name for name in fields if name not in record]
    if missing:
        raise RecordError(f'{topic}: no field {", ".join(missing)} (has {", ".join(record)})')
    out = {}
    for name, convert in fields.items():
        try:
            out[name] = convert(record[name])
        except (AttributeError, TypeError, ValueError) as error:
            raise RecordError(f'{topic}: field {name}={record[name]!r}: {error}') from None
    return out


def boolean(value) -> bool:
    """A JSON true/false (bool('false') would be True)."""
    if not isinstance(value, bool):
        raise TypeError('not true or false')
    return value


def string(value) -> str:
    if not isinstance(value, str):
        raise TypeError('not a string')
    return value
