"""Export round trip: bag -> control grid -> ALOHA HDF5 / LeRobot v3, values and stamps intact."""

import json

import numpy as np
import pytest

from halo_ros.cli import main as cli_main
from halo_ros.recording import synthetic
from halo_ros.recording import topics as T
from halo_ros.recording.episode_reader import read_episode
from halo_ros.recording.resample import align_episode

FPS = 50.0


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp('episodes')
    sent = {
        'ep_ok': synthetic.write_pick_place_episode(root / 'ep_ok', success=True, seed=3),
        'ep_failed': synthetic.write_pick_place_episode(
            root / 'ep_failed', success=False, seed=4, start_ns=1_800_000_000 * 10**9
        ),
    }
    return root, sent


def _sent_joint(sent, topic):
    rows = [(stamp, data) for t, _, _, stamp, data in sent if t == topic]
    return rows


def test_alignment_takes_the_latest_sample_at_or_before_each_tick(recorded):
    root, sent = recorded
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    aligned = align_episode(read_episode(root / 'ep_ok'), FPS)
    assert np.all(np.diff(aligned.grid_ns) == 20_000_000)
    for side, arm in enumerate(T.FOLLOWERS):
        rows = [
            (stamp, ts.deserialize_cdr(data, T.JOINT_STATE).position)
            for stamp, data in _sent_joint(sent['ep_ok'], T.joint_state_topic(arm))
        ]
        stamps = np.array([s for s, _ in rows])
        for t in range(0, aligned.length, 7):
            grid = aligned.grid_ns[t]
            k = int(np.flatnonzero(stamps <= grid)[np.argmax(stamps[stamps <= grid])])
            assert aligned.state_stamp_ns[t, side] == stamps[k]
            np.testing.assert_array_equal(aligned.state[t, 7 * side : 7 * side + 7], rows[k][1])
    cam_stamps = [s for t, _, _, s, _ in sent['ep_ok'] if t == 'cam_high/image_raw']
    for t in range(aligned.length):
        s = aligned.image_stamp_ns['cam_high'][t]
        assert s <= aligned.grid_ns[t] and s == cam_stamps[aligned.image_index['cam_high'][t]]
        assert aligned.grid_ns[t] - s < 1e9 / 30 + 5e6  # never older than one camera period
    assert aligned.action_source == 'command'
    assert aligned.success is True and aligned.final_reward == pytest.approx(4.0)
    assert aligned.instruction == 'pick up the cube and place it on the left'


def test_export_round_trip_aloha_and_lerobot(recorded, tmp_path):
    h5py = pytest.importorskip('h5py')
    pq = pytest.importorskip('pyarrow.parquet', reason='pyarrow: the recording extra')
    pytest.importorskip('imageio_ffmpeg')
    root, _ = recorded
    out = tmp_path / 'out'
    assert cli_main(['export-dataset', str(root), '--out', str(out), '--no-progress']) == 0

    episodes = sorted(root.iterdir())  # ep_failed, ep_ok: exported in this order
    aligned = [align_episode(read_episode(e), FPS) for e in episodes]
    data = read_episode(episodes[1])

    # ALOHA HDF5: values (float32 like ALOHA's own files), exact stamps, raw frames.
    with h5py.File(out / 'aloha' / 'episode_1.hdf5') as f:
        a = aligned[1]
        np.testing.assert_array_equal(f['observations/qpos'][:], a.state.astype(np.float32))
        np.testing.assert_array_equal(f['action'][:], a.action.astype(np.float32))
        np.testing.assert_array_equal(f['stamp_ns'][:], a.grid_ns)
        np.testing.assert_array_equal(f['observations/qpos_stamp_ns'][:], a.state_stamp_ns)
        assert f['observations/images/cam_high'].shape == (a.length, 48, 64, 3)
        idx = a.image_index['cam_left_wrist']
        frames = dict(data.frames('cam_left_wrist', idx[[0, 50, -1]]))
        for t in (0, 50, a.length - 1):
            np.testing.assert_array_equal(
                f['observations/images/cam_left_wrist'][t], frames[idx[t]]
            )
        assert f.attrs['success'] == 1 and f.attrs['instruction'].startswith('pick up')
    with h5py.File(out / 'aloha' / 'episode_0.hdf5') as f:
        assert f.attrs['success'] == 0  # failed episodes are kept, marked

    # LeRobot v3
    lr = out / 'lerobot'
    info = json.loads((lr / 'meta' / 'info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == FPS
    assert info['total_episodes'] == 2
    assert info['total_frames'] == sum(a.length for a in aligned)
    assert info['features']['observation.images.cam_high']['dtype'] == 'video'
    table = pq.read_table(lr / 'data' / 'chunk-000' / 'file-000.parquet').to_pydict()
    rows = np.array(table['episode_index']) == 1
    np.testing.assert_array_equal(
        np.array(table['observation.state'])[rows], aligned[1].state.astype(np.float32)
    )
    np.testing.assert_array_equal(np.array(table['stamp_ns'])[rows], aligned[1].grid_ns)
    np.testing.assert_allclose(
        np.array(table['timestamp'])[rows], np.arange(aligned[1].length) / FPS, atol=1e-6
    )
    assert np.array(table['index']).tolist() == list(range(info['total_frames']))
    episodes_table = pq.read_table(lr / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet')
    ep = episodes_table.to_pylist()
    assert [e['success'] for e in ep] == [False, True]
    assert ep[1]['dataset_from_index'] == aligned[0].length
    assert ep[1]['dataset_to_index'] == info['total_frames']
    tasks = pq.read_table(lr / 'meta' / 'tasks.parquet')
    assert json.loads(tasks.schema.metadata[b'pandas'])['index_columns'] == ['task']
    assert tasks.to_pydict()['task'] == ['pick up the cube and place it on the left']

    # Video: one frame per row, the right source frame in each (R channel = 8 * frame index).
    import imageio_ffmpeg

    video = lr / 'videos' / 'observation.images.cam_high' / 'chunk-000' / 'file-000.mp4'
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    decoded = [
        np.frombuffer(b, np.uint8).reshape(meta['size'][1], meta['size'][0], 3) for b in reader
    ]
    assert len(decoded) == info['total_frames']
    start = int(round(ep[1]['videos/observation.images.cam_high/from_timestamp'] * FPS))
    want = (8 * aligned[1].image_index['cam_high']) % 256
    got = np.array([d[..., 0].mean() for d in decoded[start : start + aligned[1].length]])
    assert np.abs(got - want).max() < 3.5  # a neighbouring frame would be 8 off


def test_export_skips_unfinished_bags_unless_recovered_and_can_keep_only_successes(
    recorded, tmp_path
):
    import shutil

    root, _ = recorded
    bags = tmp_path / 'bags'
    shutil.copytree(root, bags)
    cut = bags / 'ep_ok' / 'ep_ok.mcap'
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])  # a killed recorder
    (bags / 'ep_ok' / 'metadata.yaml').unlink()

    def exported(*extra):
        out = tmp_path / f'out{len(list(tmp_path.iterdir()))}'
        assert (
            cli_main(
                [
                    'export-dataset',
                    str(bags),
                    '--out',
                    str(out),
                    '--format',
                    'aloha',
                    '--no-progress',
                    *extra,
                ]
            )
            == 0
        )
        return sorted(p.name for p in (out / 'aloha').iterdir())

    assert exported() == ['episode_0.hdf5']  # only ep_failed: the cut bag is skipped
    assert exported('--recover') == ['episode_0.hdf5', 'episode_1.hdf5']
    assert exported('--only-success') == ['episode_0.hdf5']  # ep_ok (recovered, successful)


def test_lerobot_files_roll_over_by_size_and_chunk(recorded, tmp_path):
    pq = pytest.importorskip('pyarrow.parquet', reason='pyarrow: the recording extra')
    from halo_ros.recording.lerobot_v3 import FileLimits, write_lerobot_v3

    root, _ = recorded
    episodes = [(d, align_episode(d, FPS)) for d in map(read_episode, sorted(root.iterdir()))]
    out = write_lerobot_v3(
        episodes,
        tmp_path / 'lr',
        fps=FPS,
        progress=False,
        limits=FileLimits(data_bytes=1, video_bytes=1, chunks_size=1),
    )
    ep = pq.read_table(out / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet').to_pylist()
    for i, e in enumerate(ep):  # one file per episode, one file per chunk folder
        assert (e['data/chunk_index'], e['data/file_index']) == (i, 0)
        assert e['videos/observation.images.cam_high/chunk_index'] == i
        assert e['videos/observation.images.cam_high/from_timestamp'] == 0.0
        rows = pq.read_table(out / 'data' / f'chunk-{i:03d}' / 'file-000.parquet')
        assert rows.num_rows == e['length'] and set(rows['episode_index'].to_pylist()) == {i}
        assert (
            out / 'videos' / 'observation.images.cam_high' / f'chunk-{i:03d}' / 'file-000.mp4'
        ).is_file()
