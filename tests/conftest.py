"""Test session set-up: every ROS participant stays on loopback, in a domain of its own."""

import pytest

from halo_ros import rosenv

START_NS = 1_700_000_000_000_000_000  # the synthetic recordings' first stamp

# Before anything imports rclpy: child processes inherit this environment.
rosenv.apply(rosenv.random_domain_id())


@pytest.fixture(scope='module')
def emcot(tmp_path_factory):
    """Two synthetic pick-place episodes, recorded and annotated into EM-CoT folders."""
    from halo_ros.cli import main as cli_main
    from halo_ros.recording import synthetic

    root = tmp_path_factory.mktemp('emcot')
    for i in range(2):
        synthetic.write_pick_place_episode(root / 'bags' / f'ep{i}', start_ns=START_NS, seed=i)
    out = root / 'emcot'
    assert cli_main(['annotate', str(root / 'bags'), '--out', str(out), '--no-progress']) == 0
    return out
