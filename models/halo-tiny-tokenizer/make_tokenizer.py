"""Regenerate models/halo-tiny-tokenizer/tokenizer.json (run from the repository root).

A byte-level BPE trained on ALOHA-style instructions, EM-CoT reasoning tags and every thought the
template annotator writes (merges span words, so stock phrases are single tokens), padded with
reserved tokens so HALO's six special tokens sit at ids 1000..1005 (halo-tiny's config).
"""

import itertools
from pathlib import Path

from halo_ros.model.config import load_config
from halo_ros.model.tokenizer import build_tiny_tokenizer, load_tokenizer
from halo_ros.reasoning import prompt
from halo_ros.recording.emcot import template_thoughts

VERBS = [
    'pick up',
    'place',
    'lift',
    'move',
    'push',
    'grasp',
    'release',
    'hand over',
    'insert',
    'open',
    'close',
    'put',
]
OBJECTS = [
    'the red cube',
    'the blue block',
    'the cup',
    'the peg',
    'the socket',
    'the bottle',
    'the box',
    'the bowl',
    'the towel',
    'the lid',
]
PLACES = [
    'into the box',
    'onto the plate',
    'to the right arm',
    'to the left arm',
    'into the socket',
    'on the table',
    'next to the bowl',
]


def corpus() -> list[str]:
    lines = []
    for verb, obj, place in itertools.product(VERBS, OBJECTS, PLACES):
        lines.append(
            f'You are an embodied agent. Your task is to: {verb} {obj} {place}. Plan and act.'
        )
        lines.append(
            f'<|plan|>{verb} {obj}, then move it {place}. <|subtask|>{verb} {obj} '
            '<|movement|>[LEFT]: move forward and down. [RIGHT]: stay. open the '
            'gripper, close the gripper, rotate, lift up, move left, move right, '
            'move back.'
        )
    lines += template_thoughts()
    lines.append(prompt('transfer the cube to the other arm'))
    lines.append(
        '0123456789 .,;:!?()[]-_/"\' abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ'
    )
    return lines


def main() -> None:
    cfg = load_config('halo-tiny')
    directory = Path('models/halo-tiny-tokenizer')
    directory.mkdir(exist_ok=True)
    build_tiny_tokenizer(corpus(), cfg.special_tokens).save(str(directory / 'tokenizer.json'))
    load_tokenizer(directory).check(cfg)


if __name__ == '__main__':
    main()
