"""halo-ros eval-open-loop: chunks on recorded frames against the camera-blind baseline."""

import json

import numpy as np
import pytest

from halo_ros.cli import main as cli_main
from halo_ros.evaluation.open_loop import open_loop_fit
from halo_ros.training.data import episode_folders, load_episode


def _demos(rng, episodes=12, k=50):
    """Chunks whose end depends on a per-episode target (where the cube is), plus noise."""
    target = rng.uniform(-0.3, 0.3, (episodes, 1, 14))
    ramp = np.linspace(0, 1, k)[None, :, None]
    return target * ramp + rng.normal(0, 0.01, (episodes, k, 14))


def test_a_chunk_that_follows_the_demonstrations_explains_them_and_a_blind_one_does_not():
    demos = _demos(np.random.default_rng(0))
    exact = open_loop_fit({0: demos}, {0: demos})
    blind = open_loop_fit({0: np.repeat(demos.mean(0, keepdims=True), len(demos), 0)}, {0: demos})
    assert [f.arm for f in exact] == ['left', 'right']
    for fit in exact:
        assert fit.model_error_rad == 0 and fit.explained == 1
        assert (
            fit.model_spread_rad == pytest.approx(fit.demo_spread_rad) and fit.demo_spread_rad > 0.1
        )
    for fit in blind:
        assert fit.explained == pytest.approx(0, abs=1e-6) and fit.model_spread_rad < 1e-6
    # Half-way between them is in between, and worse than blind reads as negative.
    half = open_loop_fit({0: (demos + demos.mean(0, keepdims=True)) / 2}, {0: demos})
    assert all(0.3 < f.explained < 0.7 for f in half)
    assert all(f.explained < 0 for f in open_loop_fit({0: demos + 1.0}, {0: demos}))
    with pytest.raises(ValueError, match='disagree'):
        open_loop_fit({0: demos[:, :10]}, {0: demos})


RANDOM = ['--checkpoint', 'random', '--backend', 'torch', '--set', 'cameras=cam_high']
SIZE = ['--set', 'image_height=48', '--set', 'image_width=64']  # the synthetic recording's


def test_the_command_scores_every_time_and_arm_against_the_recorded_chunks(emcot, tmp_path):
    out = tmp_path / 'fit.json'
    args = ['eval-open-loop', str(emcot), *RANDOM, *SIZE, '--times', '0', '0.5', '--out', str(out)]
    assert cli_main(args) == 0
    document = json.loads(out.read_text())
    fits = document['fits']
    assert [(f['tick'], f['arm']) for f in fits] == [
        (0, 'left'),
        (0, 'right'),
        (25, 'left'),
        (25, 'right'),
    ]
    assert all(f['episodes'] == 2 and np.isfinite(f['model_error_rad']) for f in fits)
    # The baseline is read from the recorded actions: recompute it from the episodes.
    episodes = [load_episode(f, ('cam_high',), 'cam_high') for f in episode_folders([emcot])]
    demo = np.stack([e.actions[25:75] for e in episodes])
    blind = np.abs(demo - demo.mean(0, keepdims=True))[..., 7:13].mean()
    assert fits[3]['blind_error_rad'] == pytest.approx(float(blind), rel=1e-5)


def test_bad_input_gets_a_clear_error(emcot, tmp_path, caplog):
    assert cli_main(['eval-open-loop', str(emcot), *RANDOM, *SIZE, '--episodes', '0']) == 2
    assert '--episodes must be at least 1' in caplog.text
    assert cli_main(['eval-open-loop', str(tmp_path), *RANDOM]) == 2
    assert 'not an EM-CoT episode folder' in caplog.text
    # Frames of another size than the engine takes are refused, naming both.
    assert cli_main(['eval-open-loop', str(emcot), *RANDOM, '--episodes', '1']) == 2
    assert 'recorded frames are [(48, 64)], the engine takes (240, 320)' in caplog.text
    assert cli_main(['eval-open-loop', str(emcot), '--checkpoint', 'no/such/folder']) == 2
    assert "no checkpoint 'no/such/folder'" in caplog.text
