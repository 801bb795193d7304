"""EM-CoT annotation: phases from proprioception, subtasks, goal images, HALO's sample layout."""

import json

import numpy as np
import pytest
import yaml

from halo_ros.cli import main as cli_main
from halo_ros.recording import synthetic
from halo_ros.recording.emcot import (
    AnnotationRequest,
    Reasoning,
    ReasoningAnnotator,
    TemplateAnnotator,
    annotate_episode,
    load_annotator,
    segment_subtasks,
    training_sample,
)
from halo_ros.recording.episode_reader import read_episode
from halo_ros.recording.primitives import Phase, arm_primitives, runs
from halo_ros.recording.resample import align_episode

START_NS = 1_700_000_000_000_000_000
FPS = 50.0


@pytest.fixture(scope='module')
def episode(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    synthetic.write_pick_place_episode(root / 'ep', start_ns=START_NS, seed=5)
    data = read_episode(root / 'ep')
    return root, data, align_episode(data, FPS)


def test_annotation_finds_reach_grasp_transfer_release_retreat(episode):
    _, data, aligned = episode
    ann = annotate_episode(data, aligned, TemplateAnnotator())
    # Ground truth, in seconds since the synthetic episode's start.
    bounds = np.cumsum([0.0] + [p.duration_s for p in synthetic.PICK_PLACE_PHASES])
    truth = [(p.name, bounds[i], bounds[i + 1]) for i, p in enumerate(synthetic.PICK_PLACE_PHASES)]
    t = (aligned.grid_ns - START_NS) / 1e9
    assert [s.right.value for s in ann.subtasks] == [name for name, _, _ in truth]
    assert all(s.left is Phase.IDLE for s in ann.subtasks)
    for s, (_, start, _) in zip(ann.subtasks[1:], truth[1:], strict=True):
        assert abs(t[s.start] - start) < 0.15, (s, start)
    for s, (_, _, end) in zip(ann.subtasks[:-1], truth[:-1], strict=True):
        assert abs(t[s.end] - end) < 0.15, (s, end)
    assert ann.reasoning.subtask_text[1] == 'grasp the object with the right gripper'
    assert len(ann.reasoning.plan) == 5


def test_still_noisy_arm_stays_idle_and_bad_input_is_rejected():
    rng = np.random.default_rng(0)
    q = np.tile(np.r_[synthetic.START_POSE_RAD, 1.0], (200, 1)) + rng.normal(0, 0.002, (200, 7))
    assert set(arm_primitives(q, FPS).phase) == {Phase.IDLE}
    for bad in (q[:, :6], q[:2], np.where(np.arange(7) == 3, np.nan, q)):
        with pytest.raises(ValueError):
            arm_primitives(bad, FPS)


def test_concurrent_arms_make_subtasks_of_the_pair():
    n = 175
    t = np.arange(n) / FPS
    left = np.tile(np.r_[synthetic.START_POSE_RAD, 1.0], (n, 1))
    right = np.tile(np.r_[synthetic.START_POSE_RAD, 0.4], (n, 1))  # stopped on an object
    left[:, 0] = np.clip(t - 1.0, 0, 1)  # left reaches during 1..2 s
    left[:, 6] = 1.0 - 0.9 * np.clip((t - 2.0) / 0.5, 0, 1)  # and grasps during 2..2.5 s
    subs = segment_subtasks(arm_primitives(left, FPS), arm_primitives(right, FPS), FPS)
    assert [(s.left, s.right) for s in subs] == [
        (Phase.IDLE, Phase.HOLD),
        (Phase.REACH, Phase.HOLD),
        (Phase.GRASP, Phase.HOLD),
        (Phase.HOLD, Phase.HOLD),
    ]
    assert abs(subs[1].start / FPS - 1.0) < 0.1 and abs(subs[2].start / FPS - 2.0) < 0.1
    texts = [TemplateAnnotator().subtask_text(s) for s in subs]
    assert texts == [
        'hold the object with the right gripper',
        'reach for the object with the left arm',
        'grasp the object with the left gripper',
        'hold the objects with both grippers',
    ]
    assert [r[0] for r in runs([1, 1, 2, 2, 2, 1])] == [1, 2, 1]


def test_a_gripper_stopped_half_open_by_an_object_still_holds_it():
    n = 150
    t = np.arange(n) / FPS
    q = np.tile(np.r_[synthetic.START_POSE_RAD, 1.0], (n, 1))
    q[:, 6] = 1.0 - 0.4 * np.clip((t - 0.5) / 0.4, 0, 1)  # closes to 0.6 (the cube is wide)
    q[:, 0] = np.clip(t - 1.5, 0, 1)  # then carries it
    phases = [p for p, _, _ in runs(list(arm_primitives(q, FPS).phase))]
    assert phases == [Phase.IDLE, Phase.GRASP, Phase.HOLD, Phase.TRANSFER, Phase.HOLD]


class _Numbered(ReasoningAnnotator):
    name = 'numbered'

    def annotate(self, request: AnnotationRequest) -> Reasoning:
        assert all('cam_high' in g for g in request.goal_frames)
        texts = tuple(f'step {s.index}' for s in request.subtasks)
        return Reasoning(plan=texts, subtask_text=texts)


def test_annotator_is_pluggable(episode):
    _, data, aligned = episode
    ann = annotate_episode(data, aligned, _Numbered())
    assert ann.reasoning.subtask_text[0] == 'step 0'
    assert isinstance(
        load_annotator('halo_ros.recording.emcot:TemplateAnnotator'), TemplateAnnotator
    )
    with pytest.raises(ValueError):
        load_annotator('no_colon')
    with pytest.raises(TypeError):
        load_annotator('halo_ros.recording.emcot:Subtask')


def test_annotate_command_writes_halo_training_data(episode, tmp_path):
    root, data, aligned = episode
    out = tmp_path / 'emcot'
    assert cli_main(['annotate', str(root), '--out', str(out), '--no-progress']) == 0
    folder = out / 'episode_0'
    ann = yaml.safe_load((folder / 'annotation.yaml').read_text())
    sub = json.loads((folder / 'episode0_subtask.json').read_text())
    assert sub['fps'] == FPS and len(sub['reasoning']) == len(ann['subtasks']) == 5
    assert json.loads((folder / 'instructions.json').read_text())['seen'] == [aligned.instruction]

    # Mid-transfer: the sample carries the transfer subtask, its goal (the subtask's last frame)
    # and the next 50 commanded actions.
    transfer = ann['subtasks'][2]
    tick = (transfer['start_index'] + transfer['end_index']) // 2
    sample = training_sample(folder, tick)
    assert sample.subtask_index == 2
    assert '<|subtask|>move the object with the right arm<|movement|>' in sample.thought
    assert '[RIGHT]: move the arm while holding the object' in sample.thought
    assert sample.prompt.startswith('You are an embodied agent. Your task is to: pick up')
    np.testing.assert_allclose(sample.actions, aligned.action[tick : tick + 50], atol=1e-6)
    frame_index = aligned.image_index['cam_high'][transfer['end_index']]
    want = dict(data.frames('cam_high', [frame_index]))[frame_index]
    assert np.abs(sample.goal_image.astype(int) - want).max() <= 3  # JPEG
    import cv2

    goal = cv2.imread(str(folder / transfer['goal_images']['cam_high']))[..., ::-1]
    assert np.abs(goal.astype(int) - want).max() <= 3

    # Near the end the chunk is padded with the last action, as HALO's loader does.
    last = training_sample(folder, aligned.length - 5)
    assert last.actions.shape == (50, 14)
    np.testing.assert_allclose(last.actions[10:], np.repeat(aligned.action[-1:], 40, 0), atol=1e-6)
