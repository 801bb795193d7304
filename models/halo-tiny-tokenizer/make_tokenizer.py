"""Regenerate models/halo-tiny-tokenizer/tokenizer.json (run from the repository root)."""
import itertools
from halo_ros.model.config import load_config
from halo_ros.model.tokenizer import build_tiny_tokenizer, load_tokenizer
cfg = load_config('halo-tiny')
verbs = ['pick up', 'place', 'lift', 'move', 'push', 'grasp', 'release', 'hand over', 'insert', 'open', 'close', 'put']
objs = ['the red cube', 'the blue block', 'the cup', 'the peg', 'the socket', 'the bottle', 'the box', 'the bowl', 'the towel', 'the lid']
places = ['into the box', 'onto the plate', 'to the right arm', 'to the left arm', 'into the socket', 'on the table', 'next to the bowl']
corpus = []
for v, o, p in itertools.product(verbs, objs, places):
    corpus.append(f'You are an embodied agent. Your task is to: {v} {o} {p}. Plan and act.')
    corpus.append(f'<|plan|>{v} {o}, then move it {p}. <|subtask|>{v} {o} <|movement|>[LEFT]: move forward and down. [RIGHT]: stay. open the gripper, close the gripper, rotate, lift up, move left, move right, move back.')
corpus += ['0123456789 .,;:!?()[]-_/"\' abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ']
tok = build_tiny_tokenizer(corpus, cfg.special_tokens)
import pathlib
d = pathlib.Path('models/halo-tiny-tokenizer'); d.mkdir(exist_ok=True)
tok.save(str(d / 'tokenizer.json'))
t = load_tokenizer(d); t.check(cfg)
print(t.special, t.vocab_size)
ids = t.encode('pick up the red cube into the box'); print(ids, t.decode(ids))
