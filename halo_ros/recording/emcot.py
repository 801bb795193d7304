"""HALO's EM-CoT training data from recorded episodes: subtasks, reasoning text, goal images.

Pipeline: follower proprioception on the control grid -> per-arm primitives and phases
(`primitives`) -> subtasks (runs of the (left, right) phase pair) -> reasoning text (plan and
subtask) from a pluggable `ReasoningAnnotator` (templates by default; a VLM plugs in the same
way) -> per-tick movement text -> files in the layout HALO's data loader reads.

On-disk format (one folder per episode, because HALO's loader pairs the `.json` files it
finds in an episode's folder):

    <out>/episode_<i>/
      episode<i>.hdf5            ALOHA layout (see `aloha_hdf5`) with JPEG frames (Mobile ALOHA
                                 padded layout: /observations/images/<cam> (T, L) uint8 and
                                 /compress_len), plus what HALO reads:
                                   /observations/left_arm_dim, /observations/right_arm_dim (T,) = 6
                                   /Primitives/left/text, /Primitives/right/text (T,) utf-8:
                                     the per-tick movement line of each arm
                                 and, when grounded, /Grounding/text (T,) utf-8: where the
                                   object is in the grounding camera's frame of each tick
      episode<i>_subtask.json    {"fps": <control rate>, "reasoning": {"<start s>":
                                   {"plan": [remaining steps...], "subtask": "<text>"}}}
      instructions.json          {"seen": ["<instruction>"]}
      goals/subtask_<k>_<cam>.jpg  the last frame of subtask k: its visual subgoal
      annotation.yaml            everything above in one place, with tick indices, phases,
                                 stamps, the annotator's name, thresholds, success and reward

A training sample at tick t (what `training_sample` builds, as HALO's RoboTwin loader does):
prompt "You are an embodied agent. Your task is to: {instruction}. Plan and act.", thought
"<|plan|>...<|subtask|>...[<|object|>cube at x,y]<|movement|>[LEFT]: ...[RIGHT]: ..." from the
subtask active at t (the object part from tick t's frame, when grounded), goal
image = the last frame of that subtask, action chunk = action[t:t+K] padded with the last row.
"""

import importlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from halo_ros.reasoning import prompt
from halo_ros.recording.episode_reader import EpisodeData
from halo_ros.recording.grounding import Grounder
from halo_ros.recording.primitives import (
    MOVEMENT_TEXT,
    ArmPrimitives,
    Phase,
    PrimitiveThresholds,
    arm_primitives,
    merge_short_runs,
    movement_text,
    runs,
)
from halo_ros.recording.resample import AlignedEpisode

logger = logging.getLogger(__name__)

FORMAT = 'halo_ros.emcot/1'
ARM_DIM = 6


@dataclass(frozen=True)
class Subtask:
    index: int
    start: int  # first tick, inclusive
    end: int  # last tick, inclusive: its frame is the subtask's visual goal
    left: Phase
    right: Phase


def segment_subtasks(
    left: ArmPrimitives, right: ArmPrimitives, fps: float, min_subtask_s: float = 0.3
) -> list[Subtask]:
    """Subtasks = runs of the (left phase, right phase) pair, short runs merged, idle ends
    folded into their neighbours so the subtasks cover the whole episode."""
    labels = list(zip(left.phase, right.phase, strict=True))
    labels = merge_short_runs(labels, max(1, round(min_subtask_s * fps)))
    rs = runs(labels)
    idle = (Phase.IDLE, Phase.IDLE)
    if len(rs) > 1 and rs[0][0] == idle:  # waiting before the first motion belongs to it
        rs = [(rs[1][0], 0, rs[1][2])] + rs[2:]
    if len(rs) > 1 and rs[-1][0] == idle:  # and settling after the last one
        rs = rs[:-2] + [(rs[-2][0], rs[-2][1], rs[-1][2])]
    return [Subtask(k, s, e, lab[0], lab[1]) for k, (lab, s, e) in enumerate(rs)]


@dataclass(frozen=True)
class AnnotationRequest:
    instruction: str
    fps: float
    subtasks: tuple[Subtask, ...]
    goal_frames: tuple[dict[str, np.ndarray], ...]  # per subtask: camera -> its last frame
    first_frames: dict[str, np.ndarray]  # camera -> the episode's first frame


@dataclass(frozen=True)
class Reasoning:
    plan: tuple[str, ...]  # the whole task as steps
    subtask_text: tuple[str, ...]  # one per subtask


class ReasoningAnnotator(ABC):
    """Turns segmented episodes into reasoning text. Implement this to plug in a VLM: it gets
    the instruction, the subtasks (ticks and per-arm phases) and each subtask's goal frames."""

    name = 'abstract'

    @abstractmethod
    def annotate(self, request: AnnotationRequest) -> Reasoning:
        """Return one subtask text per request.subtasks entry and the overall plan."""


_ARM_PHRASES = {
    Phase.REACH: 'reach for the object with the {side} arm',
    Phase.GRASP: 'grasp the object with the {side} gripper',
    Phase.TRANSFER: 'move the object with the {side} arm',
    Phase.RELEASE: 'release the object from the {side} gripper',
    Phase.RETREAT: 'move the {side} arm back',
    Phase.HOLD: 'hold the object with the {side} gripper',
}


class TemplateAnnotator(ReasoningAnnotator):
    """Reasoning from phase templates: no model, deterministic."""

    name = 'template'

    def subtask_text(self, subtask: Subtask) -> str:
        arms = [
            (side, p)
            for side, p in (('left', subtask.left), ('right', subtask.right))
            if p in _ARM_PHRASES
        ]
        if not arms:
            return 'wait'
        if subtask.left is subtask.right is Phase.HOLD:
            return 'hold the objects with both grippers'
        # Holding while the other arm acts is context, not the step itself.
        arms = [(side, p) for side, p in arms if p is not Phase.HOLD] or arms
        parts = [_ARM_PHRASES[p].format(side=side) for side, p in arms]
        return ' and '.join(parts)  # two imperatives: 'reach ... and grasp ...'

    def annotate(self, request: AnnotationRequest) -> Reasoning:
        texts = tuple(self.subtask_text(s) for s in request.subtasks)
        plan = tuple(t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1])
        return Reasoning(plan=plan, subtask_text=texts)


def load_annotator(spec: str) -> ReasoningAnnotator:
    """'template', or 'package.module:ClassName' of a ReasoningAnnotator subclass."""
    if spec == 'template':
        return TemplateAnnotator()
    module_name, _, class_name = spec.partition(':')
    if not class_name:
        raise ValueError(f"annotator must be 'template' or 'module:Class', got {spec!r}")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, ReasoningAnnotator)):
        raise TypeError(f'{spec} is not a ReasoningAnnotator subclass')
    return cls()


@dataclass(frozen=True)
class EpisodeAnnotation:
    subtasks: tuple[Subtask, ...]
    reasoning: Reasoning
    left: ArmPrimitives
    right: ArmPrimitives
    grounding: tuple[str, ...] = ()  # per tick: the object part of the thought; () = none
    grounder: str = ''  # who grounded it ('cube' by ColorGrounder on cam_high, ...)


def ground_episode(
    data: EpisodeData, aligned: AlignedEpisode, grounder: Grounder, camera: str
) -> tuple[str, ...]:
    """The object text of every tick, from the camera frame that tick sees (each frame once)."""
    if camera not in aligned.image_index:
        raise ValueError(
            f'grounding camera {camera} was not recorded ({sorted(aligned.image_index)})'
        )
    index = aligned.image_index[camera]
    texts = {k: grounder.text(frame) for k, frame in data.frames(camera, np.unique(index))}
    return tuple(texts[int(k)] for k in index)


def annotate_episode(
    data: EpisodeData,
    aligned: AlignedEpisode,
    annotator: ReasoningAnnotator,
    thresholds: PrimitiveThresholds | None = None,
    goal_cameras: tuple[str, ...] | None = None,
    grounder: Grounder | None = None,
    grounding_camera: str = 'cam_high',
) -> EpisodeAnnotation:
    thresholds = thresholds or PrimitiveThresholds()
    left = arm_primitives(aligned.state[:, :7], aligned.fps, thresholds)
    right = arm_primitives(aligned.state[:, 7:], aligned.fps, thresholds)
    subtasks = tuple(segment_subtasks(left, right, aligned.fps))
    cameras = goal_cameras or tuple(sorted(aligned.image_index))
    goal_frames = [dict() for _ in subtasks]
    first_frames = {}
    for cam in cameras:
        wanted = {int(aligned.image_index[cam][s.end]): k for k, s in enumerate(subtasks)}
        first = int(aligned.image_index[cam][0])
        frames = dict(data.frames(cam, [first, *wanted]))
        first_frames[cam] = frames[first]
        for k, s in enumerate(subtasks):
            goal_frames[k][cam] = frames[int(aligned.image_index[cam][s.end])]
    reasoning = annotator.annotate(
        AnnotationRequest(
            instruction=aligned.instruction,
            fps=aligned.fps,
            subtasks=subtasks,
            goal_frames=tuple(goal_frames),
            first_frames=first_frames,
        )
    )
    if len(reasoning.subtask_text) != len(subtasks):
        raise ValueError(
            f'annotator {annotator.name} returned {len(reasoning.subtask_text)} '
            f'subtask texts for {len(subtasks)} subtasks'
        )
    if grounder is None:
        return EpisodeAnnotation(subtasks, reasoning, left, right)
    grounding = ground_episode(data, aligned, grounder, grounding_camera)
    return EpisodeAnnotation(
        subtasks,
        reasoning,
        left,
        right,
        grounding,
        f'{type(grounder).__name__} ({grounder.name}) on {grounding_camera}',
    )


def _time_key(tick: int, fps: float) -> str:
    return repr(round(tick / fps, 6))


def write_emcot_episode(
    out_dir: Path,
    index: int,
    data: EpisodeData,
    aligned: AlignedEpisode,
    annotation: EpisodeAnnotation,
    *,
    annotator_name: str,
    thresholds: PrimitiveThresholds,
    jpeg_quality: int = 90,
    progress: bool = False,
) -> Path:
    import cv2
    import h5py

    from halo_ros.recording.aloha_hdf5 import write_aloha_episode

    folder = Path(out_dir) / f'episode_{index}'
    if folder.exists():
        raise FileExistsError(f'{folder} exists already; annotate into a new folder')
    (folder / 'goals').mkdir(parents=True)
    h5_path = write_aloha_episode(
        folder / f'episode{index}.hdf5', data, aligned, jpeg_quality=jpeg_quality, progress=progress
    )
    n = aligned.length
    subs = annotation.subtasks
    with h5py.File(h5_path, 'a') as f:
        f['observations'].create_dataset('left_arm_dim', data=np.full(n, ARM_DIM, np.int64))
        f['observations'].create_dataset('right_arm_dim', data=np.full(n, ARM_DIM, np.int64))
        text_type = h5py.string_dtype('utf-8')
        for side, prims in (('left', annotation.left), ('right', annotation.right)):
            f.create_dataset(
                f'Primitives/{side}/text',
                dtype=text_type,
                data=[movement_text(prims, t) for t in range(n)],
            )
            f.create_dataset(
                f'Primitives/{side}/phase', dtype=text_type, data=[p.value for p in prims.phase]
            )
        if annotation.grounding:
            f.create_dataset('Grounding/text', dtype=text_type, data=list(annotation.grounding))
    texts = annotation.reasoning.subtask_text
    plan = annotation.reasoning.plan
    reasoning = {}
    for s in subs:
        remaining = [t for t in plan if t in texts[s.index :]]
        reasoning[_time_key(s.start, aligned.fps)] = {'plan': remaining, 'subtask': texts[s.index]}
    (folder / f'episode{index}_subtask.json').write_text(
        json.dumps({'fps': aligned.fps, 'reasoning': reasoning}, indent=2)
    )
    (folder / 'instructions.json').write_text(json.dumps({'seen': [aligned.instruction]}))

    cameras = sorted(aligned.image_index)
    frames = {
        cam: dict(data.frames(cam, [aligned.image_index[cam][s.end] for s in subs]))
        for cam in cameras
    }
    records = []
    for s in subs:
        goals, goal_stamps = {}, {}
        for cam in cameras:
            frame = frames[cam][int(aligned.image_index[cam][s.end])]
            name = f'goals/subtask_{s.index:02d}_{cam}.jpg'
            cv2.imwrite(
                str(folder / name), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
            )
            goals[cam] = name
            goal_stamps[cam] = int(aligned.image_stamp_ns[cam][s.end])
        records.append(
            {
                'index': s.index,
                'start_index': s.start,
                'end_index': s.end,
                'start_s': s.start / aligned.fps,
                'end_s': (s.end + 1) / aligned.fps,
                'left_phase': s.left.value,
                'right_phase': s.right.value,
                'text': texts[s.index],
                'goal_images': goals,
                'goal_frame_stamp_ns': goal_stamps,
            }
        )
    (folder / 'annotation.yaml').write_text(
        yaml.safe_dump(
            {
                'format': FORMAT,
                'annotator': annotator_name,
                'episode_id': data.meta.episode_id,
                'source_bag': str(data.bag_dir),
                'instruction': aligned.instruction,
                'fps': aligned.fps,
                'length': n,
                'success': aligned.success,
                'final_reward': aligned.final_reward,
                'thresholds': asdict(thresholds),
                'grounding': annotation.grounder or None,
                'plan': list(plan),
                'subtasks': records,
            },
            sort_keys=False,
        )
    )
    return folder


def thought_text(
    plan: list[str],
    subtask: str,
    left: str,
    right: str,
    plan_steps: int | None = None,
    object_text: str = '',
) -> str:
    """The reasoning text HALO learns to write at one tick (the one place it is built): the
    remaining plan (its first `plan_steps` steps; None = all), the active subtask, where the
    object is (when grounded) and each arm's movement, in `halo_ros.reasoning`'s tagged format
    so `parse_thought` reads these parts back."""
    from halo_ros.reasoning import Thought, movement_text

    steps = plan if plan_steps is None else plan[:plan_steps]
    return Thought(
        plan='; '.join(steps),
        subtask=subtask,
        object=object_text,
        movement=movement_text(left, right),
    ).text()


def grounding_texts(f, n: int) -> list[str]:
    """/Grounding/text of an open episode HDF5 (n ticks), or n empty strings if not grounded."""
    if 'Grounding/text' not in f:
        return [''] * n
    return [s.decode() for s in f['Grounding/text'][()]]


@dataclass(frozen=True)
class TrainingSample:
    prompt: str
    thought: str
    subtask_index: int
    goal_image: np.ndarray  # (H, W, 3) uint8 RGB, the active subtask's last frame
    actions: np.ndarray  # (K, 14)


def template_thoughts() -> list[str]:
    """Every subtask and movement line the template annotator can write, as thoughts (a
    tokenizer corpus: a tiny model's tokenizer should know its own reasoning vocabulary)."""
    import itertools

    subtasks = [p.format(side=s) for p in _ARM_PHRASES.values() for s in ('left', 'right')]
    moves = list(MOVEMENT_TEXT.values())
    thoughts = [
        thought_text([a, b], f'{a} and {b}', left, right)
        for (a, b), (left, right) in zip(
            itertools.product(subtasks, subtasks),
            itertools.cycle(itertools.product(moves, moves)),
        )
    ]
    return thoughts + ['hold the objects with both grippers', 'wait']


def training_sample(
    folder: Path, tick: int, *, chunk_size: int = 50, goal_camera: str = 'cam_high'
) -> TrainingSample:
    """Assemble the sample HALO trains on at `tick`, from an annotated episode folder."""
    import cv2
    import h5py

    folder = Path(folder)
    ann = yaml.safe_load((folder / 'annotation.yaml').read_text())
    if ann.get('format') != FORMAT:
        raise ValueError(f'{folder}: not a {FORMAT} episode (format {ann.get("format")!r})')
    (h5_path,) = folder.glob('episode*.hdf5')
    (subtask_path,) = folder.glob('episode*_subtask.json')
    sub = json.loads(subtask_path.read_text())
    keys = sorted(sub['reasoning'], key=float)
    current = max(k for k, key in enumerate(keys) if float(key) <= tick / sub['fps'] + 1e-9)
    entry = sub['reasoning'][keys[current]]
    record = ann['subtasks'][current]
    with h5py.File(h5_path) as f:
        n = f['action'].shape[0]
        if not 0 <= tick < n:
            raise IndexError(f'tick {tick} outside the episode (0..{n - 1})')
        actions = f['action'][tick : tick + chunk_size]
        left = f['Primitives/left/text'][tick].decode()
        right = f['Primitives/right/text'][tick].decode()
        grounded = grounding_texts(f, n)[tick]
        goal_row = f[f'observations/images/{goal_camera}'][record['end_index']]
    if len(actions) < chunk_size:
        actions = np.concatenate([actions, np.repeat(actions[-1:], chunk_size - len(actions), 0)])
    goal = cv2.imdecode(np.asarray(goal_row, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    thought = thought_text(entry['plan'], entry['subtask'], left, right, object_text=grounded)
    return TrainingSample(prompt(ann['instruction']), thought, current, goal, actions)
