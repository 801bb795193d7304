"""The README's demo, end to end: simulator, controller, policy and recorder as processes."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def test_demo_runs_the_whole_graph_and_leaves_two_bags(tmp_path):
    run_dir = tmp_path / 'demo'
    # torch: no ONNX export on a fresh machine (the demo's default backend exports once).
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'halo_ros.cli',
            'demo',
            '--backend',
            'torch',
            '--policy-seconds',
            '3',
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
    assert 'controller:' in output and 'intervention:' in output
    bags = sorted((run_dir / 'episodes').glob('episode_*'))
    assert len(bags) == 2, output[-2000:]
    for bag in bags:
        assert list(bag.glob('*.mcap')) and (bag / 'metadata.yaml').is_file()
