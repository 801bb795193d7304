"""EpisodeRecorder sessions (what the node's services call), without ROS."""

import pytest
import yaml
from recording_helpers import string_cdr

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeStatus, Outcome, read_sidecar
from halo_ros.recording.recorder import EpisodeRecorder, RecorderConfig
from halo_ros.recording.topics import OfferedQos


def test_sessions_start_stop_mark_and_discard(tmp_path):
    rec = EpisodeRecorder(RecorderConfig(output_dir=tmp_path, robot='rig', model_hash='m1'))
    rec.set_instruction('open the drawer')
    rec.set_offered_qos('/halo/mode', (OfferedQos(reliable=True, transient_local=True, depth=1),))
    rec.on_message('/halo/mode', T.STRING, 1, string_cdr('HOLD'))  # between episodes: ignored
    first = rec.start()
    with pytest.raises(RuntimeError, match='still recording'):
        rec.start()
    rec.on_message('/halo/mode', T.STRING, 2, string_cdr('POLICY'))
    rec.set_operator_note('slow start')
    rec.set_reward(2.5)
    summary = rec.stop()
    assert summary.meta.message_counts == {'/halo/mode': 1}
    assert (summary.meta.instruction, summary.meta.operator_note, summary.meta.reward) == (
        'open the drawer',
        'slow start',
        2.5,
    )
    assert summary.meta.robot == 'rig' and summary.meta.model_hash == 'm1'
    info = yaml.safe_load((first / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    (mode,) = [
        t for t in info['topics_with_message_count'] if t['topic_metadata']['name'] == '/halo/mode'
    ]
    assert mode['topic_metadata']['offered_qos_profiles'][0]['durability'] == 'transient_local'

    # Marking after stop updates the closed episode's sidecar and metadata.yaml.
    rec.mark_outcome(Outcome.FAILURE)
    assert read_sidecar(first).outcome is Outcome.FAILURE
    info = yaml.safe_load((first / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['custom_data']['halo.outcome'] == 'failure'

    second = rec.start()
    assert second != first and second.name.startswith('episode_0001_')
    rec.mark_outcome(Outcome.SUCCESS)
    assert rec.stop().meta.outcome is Outcome.SUCCESS
    assert rec.discard() == second and not second.exists() and first.exists()
    with pytest.raises(RuntimeError, match='no episode to discard'):
        rec.discard()
    with pytest.raises(RuntimeError, match='no episode is recording'):
        rec.stop()
    assert read_sidecar(first).status is EpisodeStatus.COMPLETE
