"""McapSink: the one place that uses rosbags' writer internals, and its check of them."""

import ast
import dataclasses
from pathlib import Path

import pytest

from halo_ros.recording.episode_meta import EpisodeMeta
from halo_ros.recording.episode_writer import EpisodeWriter
from halo_ros.recording.mcap_sink import RosbagsInternalsError

RECORDING = Path(__file__).resolve().parent.parent / 'halo_ros' / 'recording'

# What the writer needs of rosbags beyond its public API: listed here independently of the sink.
INTERNALS = [
    ('Writer', 'counts'),
    ('Writer', 'max_timestamp'),
    ('Writer', 'connections'),
    ('McapWriter', 'bio'),
    ('McapWriter', 'chunk'),
    ('McapWriter', 'chunks'),
    ('McapWriter', 'channel_stats'),
    ('McapWriter', 'message_end_time'),
    ('McapWriter', 'close_chunk'),
    ('PendingChunk', 'msgs'),
]


def _remove(monkeypatch, owner: str, name: str) -> None:
    """Make the installed rosbags look like a release without `owner.name`."""
    from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk
    from rosbags.rosbag2.writer import Writer

    if owner == 'McapWriter' and name == 'close_chunk':
        monkeypatch.delattr(McapWriter, name)
        return
    cls = {'Writer': Writer, 'McapWriter': McapWriter, 'PendingChunk': McapWriter}[owner]
    real_init = cls.__init__
    fields = [f.name for f in dataclasses.fields(PendingChunk) if f.name != name]
    other_chunk = dataclasses.make_dataclass('PendingChunk', fields)

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if owner == 'PendingChunk':
            self.chunk = other_chunk(*(getattr(self.chunk, f) for f in fields))
        else:
            delattr(self, name)

    monkeypatch.setattr(cls, '__init__', init)


@pytest.mark.parametrize('owner, name', INTERNALS, ids=[f'{o}.{n}' for o, n in INTERNALS])
def test_a_rosbags_without_an_internal_fails_at_start_with_one_clear_error(
    tmp_path, monkeypatch, owner, name
):
    _remove(monkeypatch, owner, name)
    writer = EpisodeWriter(tmp_path / 'ep', EpisodeMeta('ep'))
    with pytest.raises(RosbagsInternalsError, match=rf'no .*{owner}\.{name}\b.*mcap_sink\.py'):
        writer.start()
    assert not (tmp_path / 'ep').exists()  # nothing recorded, nothing left behind
    assert not writer.is_recording


def test_only_the_sink_touches_rosbags_writer_internals():
    private = {n for _, n in INTERNALS} - {'connections', 'chunks'}  # public names elsewhere too
    private |= {'storage', 'PendingChunk'}
    found = []
    for path in sorted(RECORDING.glob('*.py')):
        if path.name == 'mcap_sink.py':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, 'attr', None) or getattr(node, 'name', None)
            if name in private:
                found.append(f'{path.name}:{node.lineno} {name}')
    assert found == []
