"""Annotated EM-CoT episodes in memory, sampled by (episode, tick), still ticks down-weighted.

Each episode is read once: camera frames stay as their recorded JPEG bytes (decoding and the
ViT resize happen per sample, ~2 ms, because 20k decoded ViT frames would take ~2 GB of a
shared machine), actions as float32 rows, the thought text of every tick (built by
`emcot.thought_text`, the same function `training_sample` uses) tokenized once per distinct
text, and the goal frame of every subtask decoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from halo_ros.reasoning import prompt
from halo_ros.recording.emcot import FORMAT, grounding_texts, thought_text

logger = logging.getLogger(__name__)

ANNOTATION_FILE = 'annotation.yaml'


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Episode:
    folder: Path
    instruction: str
    actions: np.ndarray  # (T, 14) float32
    frames: dict[str, list]  # camera -> T JPEG frames (bytes) or raw (H, W, 3) uint8
    thought_ids: tuple[tuple[int, ...], ...]  # per tick
    object_spans: tuple[tuple[int, int] | None, ...]  # per tick: tokens of the object part
    grounding: tuple[str, ...]  # per tick: where the object is ('cube at 41,63'), '' if not said
    subtask: np.ndarray  # (T,) int, active subtask per tick
    goals: tuple[np.ndarray, ...]  # per subtask: (H, W, 3) uint8 RGB of the goal camera
    fps: float  # control rate of the tick grid

    @property
    def length(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class Sample:
    images: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8 RGB as recorded
    prompt_ids: tuple[int, ...]
    thought_ids: tuple[int, ...]
    object_span: tuple[int, int] | None  # thought tokens [first, end) saying where the object is
    goal_key: tuple[int, int]  # (episode, subtask): index of the precomputed goal latent
    actions: np.ndarray  # (K, 14) float32, padded with the last row
    lagged: bool = False  # thought and goal are from an earlier tick than images and actions


def episode_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Episode folders (holding annotation.yaml) given as themselves or as their parents."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / ANNOTATION_FILE).is_file():
            out.append(path)
            continue
        found = sorted(p.parent for p in path.glob(f'*/{ANNOTATION_FILE}')) if path.is_dir() else []
        if not found:
            raise DatasetError(
                f'{path}: not an EM-CoT episode folder ({ANNOTATION_FILE} missing) and no '
                f'sub-folder holds one; annotate recordings first (halo-ros annotate)'
            )
        out.extend(found)
    return out


def data_hash(folders: Sequence[Path]) -> str:
    """sha256 over every file of the episode folders (relative names and contents, sorted)."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob('*') if p.is_file()):
            h.update(f'{folder.name}/{path.relative_to(folder)}\0'.encode())
            with open(path, 'rb') as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def decode_frame(jpeg: bytes | np.ndarray) -> np.ndarray:
    import cv2

    if isinstance(jpeg, np.ndarray) and jpeg.ndim == 3:  # recorded without JPEG
        return jpeg
    bgr = cv2.imdecode(np.frombuffer(bytes(jpeg), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError('a recorded frame is not a decodable JPEG')
    return np.ascontiguousarray(bgr[..., ::-1])


def object_span(text: str, ids: Sequence[int], decode) -> tuple[int, int] | None:
    """The tokens [first, end) of `ids` (the encoding of thought `text`) that overlap the
    object part's body (`cube at 41,63`), found by the characters each token decodes to."""
    from halo_ros.reasoning import parse_thought

    body = parse_thought(text).object
    if not body:
        return None
    tag = '<|object|>'
    begin = text.index(tag + body) + len(tag)
    end_char = begin + len(body)
    first = end = None
    pos = 0
    for k, i in enumerate(ids):
        nxt = pos + len(decode([i]))
        if nxt > begin and pos < end_char:
            first = k if first is None else first
            end = k + 1
        pos = nxt
    return None if first is None else (first, end)


def load_episode(
    folder: Path,
    cameras: Sequence[str],
    goal_camera: str,
    encode=None,
    plan_steps: int | None = None,
) -> Episode:
    """Read one annotated episode; `encode(text) -> (ids, object span)` tokenizes thoughts
    (cached by text; None: no ids, for readers that only look at frames and actions)."""
    encode = encode or (lambda text: ((), None))
    import h5py

    ann = yaml.safe_load((folder / ANNOTATION_FILE).read_text())
    if not isinstance(ann, dict) or ann.get('format') != FORMAT:
        got = ann.get('format') if isinstance(ann, dict) else ann
        raise DatasetError(f'{folder}: not a {FORMAT} episode (format {got!r})')
    h5s, subs = list(folder.glob('episode*.hdf5')), list(folder.glob('episode*_subtask.json'))
    if len(h5s) != 1 or len(subs) != 1:
        raise DatasetError(
            f'{folder}: expected one episode*.hdf5 and one episode*_subtask.json, '
            f'found {len(h5s)} and {len(subs)}'
        )
    sub = json.loads(subs[0].read_text())
    keys = sorted(sub['reasoning'], key=float)
    starts = np.array([float(k) for k in keys])
    with h5py.File(h5s[0]) as f:
        actions = np.asarray(f['action'], np.float32)
        n = len(actions)
        missing = [c for c in {*cameras, goal_camera} if f'observations/images/{c}' not in f]
        if missing:
            have = sorted(f['observations/images'])
            raise DatasetError(f'{folder}: cameras {missing} not recorded (have {have})')
        lens = f['compress_len'] if 'compress_len' in f else None
        names = sorted(f['observations/images'])
        frames = {}
        for cam in cameras:
            rows = f[f'observations/images/{cam}'][()]
            cam_lens = lens[names.index(cam)] if lens is not None else np.full(n, rows.shape[-1])
            if rows.ndim == 4:  # raw (T, H, W, 3) frames
                frames[cam] = list(rows)
                continue
            frames[cam] = [bytes(rows[t][: int(cam_lens[t])]) for t in range(n)]
        left = [s.decode() for s in f['Primitives/left/text'][()]]
        right = [s.decode() for s in f['Primitives/right/text'][()]]
        grounded = grounding_texts(f, n)
        goal_rows = f[f'observations/images/{goal_camera}']
        goals = tuple(decode_frame(goal_rows[int(s['end_index'])]) for s in ann['subtasks'])
    if len(goals) != len(keys):
        raise DatasetError(
            f'{folder}: {len(goals)} subtasks in {ANNOTATION_FILE}, {len(keys)} in {subs[0].name}'
        )
    current = np.searchsorted(starts, np.arange(n) / sub['fps'] + 1e-9, side='right') - 1
    current = np.maximum(current, 0)
    thoughts = []
    for t in range(n):
        entry = sub['reasoning'][keys[current[t]]]
        text = thought_text(
            entry['plan'], entry['subtask'], left[t], right[t], plan_steps, grounded[t]
        )
        thoughts.append(encode(text))
    return Episode(
        folder,
        ann['instruction'],
        actions,
        frames,
        tuple(ids for ids, _ in thoughts),
        tuple(span for _, span in thoughts),
        tuple(grounded),
        current,
        goals,
        sub['fps'],
    )


def chunk_at(actions: np.ndarray, t: int, length: int) -> np.ndarray:
    """The demonstrated chunk from tick t: (length, A), padded with the last row near the end of
    the episode, as HALO's loader does."""
    chunk = actions[t : t + length]
    if len(chunk) < length:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], length - len(chunk), 0)])
    return chunk


STILL_TICKS = 10  # 0.2 s at 50 Hz
STILL_RAD = 0.01  # largest change of any action over STILL_TICKS that counts as not moving


def _still(actions: np.ndarray) -> np.ndarray:
    """(T,) bool: the action stays within STILL_RAD for the next STILL_TICKS ticks."""
    n = len(actions)
    ahead = np.minimum(np.arange(n) + STILL_TICKS, n - 1)
    return np.abs(actions[ahead] - actions).max(axis=1) < STILL_RAD


class EmcotData:
    """Every episode of `paths` in memory; `sample(rng)` draws (episode, tick) uniformly, still
    ticks down-weighted by `still_weight`, the first `start_s` of each episode drawn
    `start_weight` times as often."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        tokenizer,
        *,
        cameras: Sequence[str] = ('cam_high',),
        goal_camera: str = 'cam_high',
        chunk_length: int = 50,
        plan_steps: int | None = None,
        still_weight: float = 1.0,
        start_weight: float = 1.0,
        start_s: float = 0.0,
    ):
        if not 0 < still_weight <= 1:
            raise ValueError(f'still_weight must be in (0, 1], got {still_weight}')
        if start_weight <= 0 or start_s < 0:
            raise ValueError(
                f'start_weight must be positive and start_s >= 0, got {start_weight}, {start_s}'
            )
        self.folders = episode_folders(paths)
        self.cameras, self.goal_camera, self.chunk_length = (
            tuple(cameras),
            goal_camera,
            chunk_length,
        )
        cache: dict[str, tuple[tuple[int, ...], tuple[int, int] | None]] = {}

        def encode(text: str) -> tuple[tuple[int, ...], tuple[int, int] | None]:
            if text not in cache:
                ids = tuple(tokenizer.encode(text))
                cache[text] = ids, object_span(text, ids, tokenizer.decode)
            return cache[text]

        self.episodes = [
            load_episode(f, self.cameras, goal_camera, encode, plan_steps) for f in self.folders
        ]
        instructions = {e.instruction for e in self.episodes}
        if len(instructions) != 1:
            raise DatasetError(f'episodes carry different instructions: {sorted(instructions)}')
        self.instruction = instructions.pop()
        self.fps = float(self.episodes[0].fps)
        self.prompt_ids = tuple(tokenizer.encode(prompt(self.instruction)))
        self.lengths = np.array([e.length for e in self.episodes])
        # Ticks where nothing moves for the next STILL_TICKS (waiting, the hold at the end) are
        # near-duplicates of each other: drawn with weight `still_weight` (1 = uniform).
        # The start of an episode, before the arm moves towards the object, is the only place
        # where where-to-go must come from the cameras: later the arm's own motion gives it away
        # (the copycat shortcut), so without more weight there the policy reaches for the
        # average object position. Drawn with weight `start_weight`, still or not.
        still = np.concatenate([_still(e.actions) for e in self.episodes])
        start = np.concatenate(
            [np.arange(e.length) < round(start_s * e.fps) for e in self.episodes]
        )
        weights = np.where(start, start_weight, np.where(still, still_weight, 1.0))
        self._cumulative = np.cumsum(weights)
        self.still_ticks = int((still & ~start).sum()) if still_weight < 1 else 0
        self.start_ticks = int(start.sum())
        self.max_thought_tokens = max(len(ids) for ids, _ in cache.values())
        self.grounded = any(span is not None for _, span in cache.values())
        first = self.episodes[0]
        self.image_hw = decode_frame(first.frames[self.cameras[0]][0]).shape[:2]
        logger.info(
            '%d episodes, %d ticks, %d distinct thoughts (longest %d tokens), frames %s',
            len(self.episodes),
            self.ticks,
            len(cache),
            self.max_thought_tokens,
            self.image_hw,
        )

    @property
    def ticks(self) -> int:
        return int(self.lengths.sum())

    def goal_frames(self) -> dict[tuple[int, int], np.ndarray]:
        return {(i, k): g for i, e in enumerate(self.episodes) for k, g in enumerate(e.goals)}

    def frames(self, camera: str, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """`count` decoded frames of `camera` at uniformly drawn ticks (autoencoder data)."""
        out = []
        for _ in range(count):
            e, t = self._draw(rng)
            source = self.episodes[e]
            if camera in source.frames:
                out.append(decode_frame(source.frames[camera][t]))
            else:
                out.append(source.goals[int(source.subtask[t])])
        return out

    def _draw(self, rng: np.random.Generator) -> tuple[int, int]:
        u = float(rng.random()) * self._cumulative[-1]
        flat = min(int(np.searchsorted(self._cumulative, u, side='right')), self.ticks - 1)
        e = int(np.searchsorted(np.cumsum(self.lengths), flat, side='right'))
        return e, flat - int(self.lengths[:e].sum())

    def sample(self, rng: np.random.Generator, max_lag: int = 0) -> Sample:
        """A drawn tick; with max_lag > 0 its reasoning context (thought and goal) is
        that of a tick up to max_lag earlier, as a slow reasoner leaves it at inference."""
        e, t = self._draw(rng)
        lag = int(rng.integers(max_lag + 1)) if max_lag > 0 else 0
        return self.sample_at(e, t, context_tick=max(t - lag, 0))

    def sample_at(self, e: int, t: int, context_tick: int | None = None) -> Sample:
        ep = self.episodes[e]
        c = t if context_tick is None else context_tick
        actions = chunk_at(ep.actions, t, self.chunk_length)
        return Sample(
            {cam: decode_frame(ep.frames[cam][t]) for cam in self.cameras},
            self.prompt_ids,
            ep.thought_ids[c],
            ep.object_spans[c],
            (e, int(ep.subtask[c])),
            actions,
            lagged=c != t,
        )
