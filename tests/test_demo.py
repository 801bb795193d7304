"""The README's demo, end to end: simulator, controller, policy and recorder as processes."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def test_demo_runs_a_closed_loop_episode_through_the_whole_graph(tmp_path):
    """The shipped checkpoint drives one short episode (success is not asserted here: the
    20-episode figure lives in BENCHMARKS.md)."""
    run_dir = tmp_path / 'demo'
    # torch: no ONNX export on a fresh machine (the demo's default backend exports once).
    # Half sim time: on a loaded 2-core CI box eager-torch chunks can take longer than a chunk
    # lasts on the wall clock (one chunk played in 6 s once); in sim time they arrive in time.
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'halo_ros.cli',
            'demo',
            '--backend',
            'torch',
            '--episodes',
            '1',
            '--episode-seconds',
            '4',
            '--real-time-factor',
            '0.5',
            '--run-dir',
            str(run_dir),
            '--timeout',
            '240',
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert 'teleoperated episode' in output
    assert 'closed loop: ' in output and 'intervention:' in output
    bags = sorted((run_dir / 'episodes').glob('episode_*'))
    assert len(bags) == 2, output[-2000:]  # the demonstration and the policy episode
    for bag in bags:
        assert list(bag.glob('*.mcap')) and (bag / 'metadata.yaml').is_file()
    report = json.loads((run_dir / 'closed_loop.json').read_text())
    (episode,) = report['episodes']
    assert episode['policy_ticks'] > 100 and episode['chunks_executed'] >= 2, episode
    assert episode['subtasks'], 'the policy reasoned about the episode'
    assert report['latency_ms']['stamp_to_publish_p50'] > 0
    # It ends with the summary page, whose episode reports show the run (counted independently).
    from tests.viz_helpers import bag_counts, sections

    assert result.stdout.rstrip().endswith(str(run_dir / 'summary.html')), output[-500:]
    summary = (run_dir / 'summary.html').read_text()
    for bag in bags:
        assert f'href="episodes/{bag.name}/report.html"' in summary
    found = sections((bags[1] / 'report.html').read_text())['timeline']
    counts = bag_counts(bags[1])
    assert counts['chunk-switches'] >= 2 and counts['reasoning-cycles'] >= 1, counts
    assert {k: found[k] for k in counts} == {k: str(v) for k, v in counts.items()}
