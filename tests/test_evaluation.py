"""halo-ros eval: closed-loop episodes through the node's runtime and the real control loop.

Random weights fail the task; what is checked is that the loop runs as the graph does (chunks
produced, aligned and played by the controller within its limits, reasoning cycles), that the
report has every part, and that bad input gets a clear error."""

import json

import numpy as np
import pytest

from halo_ros.cli import main as cli_main
from halo_ros.evaluation.closed_loop import EpisodeRunner, EvalConfig
from halo_ros.evaluation.report import summarize, wilson_interval
from halo_ros.runtime.settings import load_policy_engine, policy_settings

SMALL = {
    'checkpoint': 'random',
    'backend': 'torch',
    'cameras': 'cam_high',
    'image_width': 64,
    'image_height': 48,
    'instruction': 'transfer the cube to the other arm',
    'max_tokens': 8,
    'threads': 1,
}


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(40, 50)
    assert low == pytest.approx(0.670, abs=1e-3) and high == pytest.approx(0.888, abs=1e-3)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.161, abs=1e-3)


def test_lockstep_eval_writes_results_and_contact_sheets(tmp_path):
    args = ['eval', '--episodes', '2', '--episode-seconds', '1.5', '--out', str(tmp_path)]
    args += [f'--set={k}={v}' for k, v in SMALL.items() if k not in ('checkpoint', 'backend')]
    args += ['--checkpoint', 'random', '--backend', 'torch', '--threads', '1']
    assert cli_main(args) == 0
    document = json.loads((tmp_path / 'eval.json').read_text())
    assert document['clock'] == 'lockstep' and len(document['episodes']) == 2
    summary = document['summary']
    assert summary['episodes'] == 2 and len(summary['wilson95']) == 2
    assert set(summary['failure_stages']) == {'reach', 'grasp', 'lift', 'hand-over'}
    for episode in document['episodes']:
        # 1.5 s at a chunk every 10 ticks: ~8 chunks, each played by the controller.
        assert episode['chunks'] >= 6 and episode['chunks_executed'] >= 5
        assert episode['reasoning_cycles'] >= 1
        assert episode['largest_step_at_switch_rad'] <= 0.06 + 1e-6  # the velocity limit
        if not episode['success']:
            assert (tmp_path / f'failure_seed{episode["seed"]}.png').stat().st_size > 1000
    assert [e['seed'] for e in document['episodes']] == [1000, 1001]


def test_emulated_delay_is_simulated_latency():
    """Lockstep with delay d: each chunk is published d ticks of simulated time after its
    observation, and the controller still plays the stream (it aligns chunks by stamp)."""
    settings = policy_settings({**SMALL, 'seam_mode': 'none'})
    runner = EpisodeRunner(
        load_policy_engine(settings),
        settings.policy,
        EvalConfig(episode_seconds=1.0, delay_steps=3),
    )
    try:
        result = runner.run(5)
    finally:
        runner.close()
    assert result.chunks >= 4 and result.chunks_executed >= 3
    np.testing.assert_allclose(result.chunk_latency_ms, 60.0)  # 3 x 20 ms, not wall time


def test_realtime_eval_runs_on_the_wall_clock():
    settings = policy_settings(SMALL)
    engine = load_policy_engine(settings)
    runner = EpisodeRunner(
        engine, settings.policy, EvalConfig(clock='realtime', episode_seconds=1.5)
    )
    try:
        result = runner.run(3)
    finally:
        runner.close()
    assert result.chunks >= 1 and result.chunks_executed >= 1
    assert all(v > 0 for v in result.chunk_latency_ms)  # real latency, unlike lockstep's 0
    assert 1.0 <= result.seconds <= 3.0
    summary = summarize([result])
    assert summary['episodes'] == 1


def test_bad_input_to_eval_gets_a_clear_error(tmp_path, caplog):
    assert (
        cli_main(['eval', '--checkpoint', str(tmp_path / 'nowhere'), '--out', str(tmp_path)]) == 2
    )
    assert 'no checkpoint' in caplog.text
    assert cli_main(['eval', '--episodes', '0', '--out', str(tmp_path)]) == 2
    assert '--episodes must be at least 1' in caplog.text
    assert cli_main(['eval', '--set', 'no_such_param=1', '--out', str(tmp_path)]) == 2
    assert 'unknown policy parameters' in caplog.text
    assert not (tmp_path / 'eval.json').exists()
