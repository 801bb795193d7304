"""Grounded thoughts: where the object is, found in the frame, written into the thought, weighted
in training, read back from what the model says."""

import h5py
import mujoco
import numpy as np
import pytest
import torch

from halo_ros.cli import main as cli_main
from halo_ros.evaluation.open_loop import grounding_fit
from halo_ros.model.config import load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.tokenizer import tokenizer_for
from halo_ros.model.training import TrainText, forward_train
from halo_ros.reasoning import Thought, parse_thought
from halo_ros.recording import synthetic
from halo_ros.recording.emcot import training_sample
from halo_ros.recording.grounding import (
    ColorGrounder,
    Grounder,
    load_grounder,
    object_text,
    parse_object_text,
)
from halo_ros.training.data import EmcotData

START_NS = 1_700_000_000_000_000_000


def _projected(sim, rig, camera: str, point: np.ndarray) -> tuple[float, float]:
    """Pixel (x, y) of a world point in a MuJoCo camera (looks down its -z, y up)."""
    data = mujoco.MjData(sim.model)
    data.qpos[:] = sim.snapshot()
    mujoco.mj_kinematics(sim.model, data)
    mujoco.mj_camlight(sim.model, data)  # camera poses
    cam = rig._ids[camera]
    p = data.cam_xmat[cam].reshape(3, 3).T @ (point - data.cam_xpos[cam])
    k = rig.intrinsics(camera)
    return k.cx + k.fx * p[0] / -p[2], k.cy - k.fy * p[1] / -p[2]


def test_the_colour_grounder_finds_the_simulated_cube_where_the_camera_projects_it():
    from halo_ros.sim.cameras import CameraRig
    from halo_ros.sim.world import AlohaSim

    sim = AlohaSim()
    rig = CameraRig(sim.model, ('cam_high',), width=160, height=120)
    grounder = ColorGrounder()
    found = []
    try:
        for seed in (1, 2, 3, 4):
            sim.reset(seed)
            frame = rig.render(sim.snapshot())['cam_high']
            x, y = grounder.locate(frame)
            px, py = _projected(sim, rig, 'cam_high', sim.object_position())
            # The centroid of the visible faces: within 2 pixels of the cube's centre.
            assert abs(x * 160 - px) < 2.0 and abs(y * 120 - py) < 2.0, (seed, x, y, px, py)
            found.append(grounder.text(frame))
    finally:
        rig.close()
    assert len(set(found)) == 4  # every seed's cube lies elsewhere, and the text says so
    empty = np.full((120, 160, 3), 90, np.uint8)
    assert grounder.locate(empty) is None and grounder.text(empty) == 'cube not seen'
    with pytest.raises(ValueError, match='uint8'):
        grounder.locate(np.zeros((120, 160), np.uint8))


def test_object_text_reads_back_and_says_two_digits_each():
    assert object_text('cube', (0.414, 0.636)) == 'cube at 41,63'
    assert object_text('cube', (0.05, 0.999)) == 'cube at 05,99'
    assert object_text('cube', (-0.1, 1.2)) == 'cube at 00,99'  # clipped to the image
    assert object_text('cube', None) == 'cube not seen'
    back = parse_object_text('cube at 05,99')
    assert back.name == 'cube' and back.xy == pytest.approx((0.05, 0.99))
    assert parse_object_text('red cube not seen').xy is None
    assert parse_object_text('somewhere on the left') is None
    assert parse_object_text('cube at 5,') is None


def test_grounders_load_by_name_or_class_and_anything_else_is_refused():
    assert load_grounder('none') is None
    assert isinstance(load_grounder('red-cube'), ColorGrounder)
    assert isinstance(load_grounder('halo_ros.recording.grounding:ColorGrounder'), Grounder)
    with pytest.raises(ValueError, match="'none'"):
        load_grounder('blue-ball')
    with pytest.raises(TypeError, match='not a Grounder'):
        load_grounder('halo_ros.recording.emcot:TemplateAnnotator')


def test_a_thought_carries_the_object_part_only_when_grounded():
    grounded = Thought('reach', 'reach for it', 'cube at 41,63', '[LEFT]: stay')
    assert grounded.text() == (
        '<|plan|>reach<|subtask|>reach for it<|object|>cube at 41,63<|movement|>[LEFT]: stay'
    )
    assert parse_thought(grounded.text()) == grounded
    plain = Thought('reach', 'reach for it', movement='[LEFT]: stay')
    assert '<|object|>' not in plain.text()  # ungrounded thoughts are the release's format
    assert parse_thought(plain.text()).object == ''


@pytest.fixture(scope='module')
def grounded(tmp_path_factory):
    """Two synthetic episodes annotated with the colour grounder. Their frames are flat colours
    (R = 8 * frame mod 256, B = 7): 'red' wherever R > 100, centred, and not seen elsewhere."""
    root = tmp_path_factory.mktemp('grounded')
    for i in range(2):
        synthetic.write_pick_place_episode(root / 'bags' / f'ep{i}', start_ns=START_NS, seed=i)
    out = root / 'emcot'
    args = ['annotate', str(root / 'bags'), '--out', str(out), '--no-progress']
    assert cli_main([*args, '--grounding', 'red-cube']) == 0
    return out


def test_annotation_grounds_every_tick_from_the_frame_that_tick_sees(grounded):
    import yaml

    folder = grounded / 'episode_0'
    with h5py.File(next(folder.glob('*.hdf5'))) as f:
        texts = [s.decode() for s in f['Grounding/text'][()]]
        n = f['action'].shape[0]
    ann = yaml.safe_load((folder / 'annotation.yaml').read_text())
    assert 'ColorGrounder (cube) on cam_high' == ann['grounding']
    assert len(texts) == n and set(texts) == {'cube at 50,50', 'cube not seen'}
    for tick in (0, n // 3, n // 2, n - 1):
        frame = training_sample(folder, tick, goal_camera='cam_high')
        thought = parse_thought(frame.thought)
        assert thought.object == texts[tick]
        assert frame.thought.index('<|object|>') < frame.thought.index('<|movement|>')
    # The text follows the frame's colour tick by tick: both kinds, switching with the frames.
    switches = sum(a != b for a, b in zip(texts, texts[1:], strict=False))
    assert switches >= 2


def test_training_data_marks_the_tokens_that_say_where_the_object_is(grounded, emcot):
    tok = tokenizer_for(load_config('halo-tiny'))
    data = EmcotData([grounded], tok)
    assert data.grounded
    ep = data.episodes[0]
    for tick in range(0, ep.length, 37):
        sample = data.sample_at(0, tick)
        first, end = sample.object_span
        said = tok.decode(sample.thought_ids[first:end])
        assert said.strip().startswith('cube') and ep.grounding[tick] in said
        assert '<|movement|>' not in said
    plain = EmcotData([emcot], tok)
    assert not plain.grounded and plain.sample_at(0, 0).object_span is None


def test_the_object_weight_scales_the_span_tokens_only():
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    g = torch.Generator().manual_seed(0)
    ids = tuple(int(v) for v in torch.randint(0, 900, (10,), generator=g))
    image = torch.rand(3, 112, 112, generator=g) * 2 - 1
    from halo_ros.model.training import TrainViTImage

    def run(span):
        out = forward_train(model, [TrainViTImage(image), TrainText(ids, span_weight=span)])
        per_token = torch.nn.functional.cross_entropy(
            out.predictions[1], torch.tensor([*ids, 1001]), reduction='none'
        )
        return out, per_token

    plain, per_token = run(None)
    assert plain.span_ce is None
    weighted, _ = run((3, 6, 4.0))
    w = torch.ones(len(per_token))
    w[3:6] = 4.0
    assert float(weighted.ce) == pytest.approx(float((w * per_token).sum() / w.sum()), rel=1e-5)
    assert float(weighted.span_ce) == pytest.approx(float(per_token[3:6].mean()), rel=1e-5)


def test_grounding_fit_scores_what_the_model_says_against_the_annotation():
    pairs = {
        0: [
            ('cube at 40,60', 'cube at 42,60'),
            ('cube at 50,70', 'cube at 50,66'),
            ('cube at 60,80', 'somewhere'),  # said nothing readable
            ('cube not seen', 'cube at 10,10'),  # nothing annotated: not scored
        ]
    }
    (fit,) = grounding_fit(pairs)
    assert (fit.episodes, fit.said) == (3, 2)
    assert fit.error_x == pytest.approx(1.0) and fit.error_y == pytest.approx(2.0)
    assert fit.blind_x == pytest.approx(20 / 3) and fit.blind_y == pytest.approx(20 / 3)


def test_the_contact_sheet_rings_where_the_reasoning_said_the_object_is(tmp_path):
    import cv2

    from halo_ros.evaluation.closed_loop import Moment
    from halo_ros.evaluation.report import contact_sheet

    frame = np.full((120, 160, 3), 80, np.uint8)
    said = Moment(0.0, frame, None, 'reach', 0, 'cube at 25,75')
    silent = Moment(0.0, frame, None, 'reach', 0, '')
    for moments, name in (([said], 'said.png'), ([silent], 'silent.png')):
        contact_sheet(moments, 'seed 1', tmp_path / name, columns=1, rows=1)
    green = []
    for name in ('said.png', 'silent.png'):
        sheet = cv2.imread(str(tmp_path / name))[..., ::-1].astype(int)
        mask = (sheet[..., 1] > 150) & (sheet[..., 0] < 100) & (sheet[..., 2] < 100)
        green.append(np.argwhere(mask))
    assert len(green[1]) == 0 and len(green[0]) > 10
    # The ring is centred a quarter across and three quarters down the (x2 enlarged) frame.
    cy, cx = green[0].mean(0)
    assert abs(cx - (8 + 0.25 * 320)) < 3 and abs(cy - (40 + 0.75 * 240)) < 3


def test_a_checkpoint_trained_on_grounded_thoughts_says_so(grounded, tmp_path):
    import yaml

    out = tmp_path / 'ckpt'
    args = ['train', str(grounded), '--out', str(out), '--steps', '2', '--batch', '2']
    assert cli_main([*args, '--ae-steps', '2', '--object-weight', '3']) == 0
    card = yaml.safe_load((out / 'training.yaml').read_text())
    assert card['grounded'] is True and card['training']['config']['object_weight'] == 3.0
    assert 'obj' in card['training']['final_losses']  # the object tokens' CE is logged


def test_the_shipped_policy_says_where_the_cube_is_on_scenes_it_never_saw():
    """The shipped checkpoint reasons on a fresh simulated scene (seeds the demonstrations never
    used) and its thought places the cube where the colour threshold finds it."""
    from halo_ros.engine.interface import Observation
    from halo_ros.runtime.settings import load_policy_engine, policy_settings
    from halo_ros.sim.cameras import CameraRig
    from halo_ros.sim.world import AlohaSim

    values = {'checkpoint': 'halo-tiny-transfer-cube', 'backend': 'torch', 'threads': 1}
    h, w = policy_settings(values).card['image_hw']
    settings = policy_settings(values | {'image_height': h, 'image_width': w})
    engine = load_policy_engine(settings)
    sim = AlohaSim()
    rig = CameraRig(sim.model, settings.engine.cameras, width=w, height=h)
    errors = []
    try:
        for seed in (1000, 1001, 1002):
            sim.reset(seed)
            frames = rig.render(sim.snapshot())
            observation = Observation(1, frames, np.zeros(14, np.float32))
            reasoning = engine.reason(observation, settings.values['instruction'], 1, subgoal=False)
            said = parse_object_text(reasoning.object)
            truth = ColorGrounder().locate(frames['cam_high'])
            assert said is not None and said.xy is not None, reasoning.text
            errors.append(np.abs(np.subtract(said.xy, truth)) * 100)
    finally:
        rig.close()
        engine.close()
    # Saying the average start position would be off by ~3 hundredths on average.
    assert np.max(errors) <= 2.0, errors
