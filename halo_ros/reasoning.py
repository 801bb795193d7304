"""HALO's reasoning text: one format, written by annotation and training, read by the nodes.

The released data tags the three parts of a thought with textual markers (HALO's
`robotwin_dataset.py`): `<|plan|>` the whole-task plan, `<|subtask|>` the current step, and
`<|movement|>[LEFT]: ... [RIGHT]: ...` what each arm does now. Ours adds one optional part
before the movement, written only when the annotation grounds the object
(`halo_ros.recording.grounding`): `<|object|>cube at 41,63`, where the camera sees it now.
"""

import re
from dataclasses import dataclass

PROMPT_TEMPLATE = 'You are an embodied agent. Your task is to: {instruction}. Plan and act.'

_TAGS = ('plan', 'subtask', 'object', 'movement')
_OPTIONAL = ('object',)  # left out of the text when empty: ungrounded thoughts read as released
_SPLIT = re.compile(r'<\|(plan|subtask|object|movement)\|>')


@dataclass(frozen=True)
class Thought:
    plan: str = ''
    subtask: str = ''
    object: str = ''
    movement: str = ''

    def text(self) -> str:
        return ''.join(
            f'<|{tag}|>{getattr(self, tag)}'
            for tag in _TAGS
            if tag not in _OPTIONAL or getattr(self, tag)
        )


def movement_text(left: str, right: str) -> str:
    return f'[LEFT]: {left} [RIGHT]: {right}'


def parse_thought(text: str) -> Thought:
    """Split decoded text into its parts; untagged or unknown text is kept in `plan` so nothing a
    model writes is silently lost."""
    parts = {tag: '' for tag in _TAGS}
    pieces = _SPLIT.split(text)
    parts['plan'] = pieces[0].strip()
    for tag, body in zip(pieces[1::2], pieces[2::2], strict=True):
        parts[tag] = (parts[tag] + ' ' + body.strip()).strip() if parts[tag] else body.strip()
    return Thought(**parts)


def prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction.strip().rstrip('.'))
