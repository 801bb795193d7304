"""Write episodes as a LeRobotDataset v3.0 (the layout `lerobot` >= 0.4 loads).

    meta/info.json                                 schema, fps, path templates, robot_type
    meta/stats.json                                per-feature min/max/mean/std/count
    meta/tasks.parquet                             task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet       one row per episode: length, tasks, row and
                                                   video ranges, success, final reward, stats
    data/chunk-000/file-000.parquet                one row per control tick, all episodes
    videos/observation.images.<cam>/chunk-000/file-000.mp4   all episodes back to back

Rows are on the control grid (see `resample`): `timestamp` is frame_index / fps as LeRobot
requires, and the real times are kept in extra int64 columns: `stamp_ns` (the grid time), and the
header stamps of the samples each row was built from (`observation.state.stamp_ns` [left,
right], `action.stamp_ns`, `observation.images.<cam>.stamp_ns`). Rewards and outcomes are kept
for every episode, failed ones included (`next.reward`, `next.done`, `next.success`; episode
`success` and `final_reward`), so the same export feeds world-model/RL training.

Files roll over as LeRobot's own writer does (`FileLimits`: 100 MB of data, 200 MB of video per
file, 1000 files per chunk folder); an episode always stays within one file.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.recording.episode_reader import EpisodeData
from halo_ros.recording.resample import AlignedEpisode
from halo_ros.recording.topics import COMMAND_JOINT_NAMES

logger = logging.getLogger(__name__)

CODEBASE_VERSION = 'v3.0'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-000/file-000.parquet'
VECTOR_FEATURES = ('observation.state', 'observation.velocity', 'observation.effort', 'action')


@dataclass(frozen=True)
class VideoConfig:
    codec: str = 'libx264'  # LeRobot's default is libsvtav1 (slower to encode, smaller)
    crf: int = 23
    gop: int = 2  # LeRobot's choice: cheap random access when a loader seeks single frames
    pix_fmt: str = 'yuv420p'


def _video_key(camera: str) -> str:
    return f'observation.images.{camera}'


class _VideoFile:
    """One mp4 per camera, episodes appended back to back."""

    def __init__(self, path: Path, height: int, width: int, fps: float, config: VideoConfig):
        import imageio_ffmpeg

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.height, self.width, self.frames = path, height, width, 0
        self._gen = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec=config.codec,
            pix_fmt_in='rgb24',
            pix_fmt_out=config.pix_fmt,
            macro_block_size=1,
            ffmpeg_log_level='error',
            output_params=['-crf', str(config.crf), '-g', str(config.gop)],
        )
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(
                f'{self.path}: frame shape {frame.shape} != '
                f'{(self.height, self.width, 3)} of the first episode'
            )
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        self._gen.close()


def _stats(x: np.ndarray) -> dict:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {
        'min': x.min(0).tolist(),
        'max': x.max(0).tolist(),
        'mean': x.mean(0).tolist(),
        'std': x.std(0).tolist(),
        'count': [len(x)],
    }


def _merge_stats(parts: list[dict]) -> dict:
    counts = np.array([p['count'][0] for p in parts], np.float64)
    means = np.array([p['mean'] for p in parts])
    stds = np.array([p['std'] for p in parts])
    total = counts.sum()
    mean = (means * counts[:, None]).sum(0) / total
    var = ((stds**2 + (means - mean) ** 2) * counts[:, None]).sum(0) / total
    return {
        'min': np.min([p['min'] for p in parts], 0).tolist(),
        'max': np.max([p['max'] for p in parts], 0).tolist(),
        'mean': mean.tolist(),
        'std': np.sqrt(var).tolist(),
        'count': [int(total)],
    }


def _image_stats(frames: list[np.ndarray]) -> dict:
    x = np.stack(frames).astype(np.float64) / 255.0  # (N, H, W, 3) -> per channel, (3, 1, 1)
    per = lambda f: [[[float(v)]] for v in f(x, axis=(0, 1, 2))]  # noqa: E731
    return {
        'min': per(np.min),
        'max': per(np.max),
        'mean': per(np.mean),
        'std': per(np.std),
        'count': [len(frames)],
    }


def _tasks_table(tasks: list[str]):
    """meta/tasks.parquet as pandas writes it: the task string is the (named) index."""
    import pyarrow as pa

    table = pa.table(
        {
            'task_index': pa.array(range(len(tasks)), pa.int64()),
            'task': pa.array(tasks, pa.string()),
        }
    )
    pandas_meta = {
        'index_columns': ['task'],
        'column_indexes': [],
        'columns': [
            {
                'name': 'task_index',
                'field_name': 'task_index',
                'pandas_type': 'int64',
                'numpy_type': 'int64',
                'metadata': None,
            },
            {
                'name': 'task',
                'field_name': 'task',
                'pandas_type': 'unicode',
                'numpy_type': 'object',
                'metadata': None,
            },
        ],
        'creator': {'library': 'pyarrow', 'version': pa.__version__},
        'pandas_version': '2.2.3',
    }
    return table.replace_schema_metadata({b'pandas': json.dumps(pandas_meta).encode()})


def _frame_columns(
    aligned: AlignedEpisode, fps: float, ep_index: int, first_index: int, task_index: int, cameras
) -> dict[str, np.ndarray]:
    """The data-file columns of one episode, one row per control tick."""
    n = aligned.length
    done = np.zeros(n, bool)
    done[-1] = True
    success = np.zeros(n, bool)
    success[-1] = bool(aligned.success)
    cols = {
        'observation.state': aligned.state.astype(np.float32),
        'observation.velocity': aligned.velocity.astype(np.float32),
        'observation.effort': aligned.effort.astype(np.float32),
        'action': aligned.action.astype(np.float32),
        'next.reward': aligned.reward.astype(np.float32),
        'next.done': done,
        'next.success': success,
        'intervention': aligned.intervention.astype(bool),
        'stamp_ns': aligned.grid_ns.astype(np.int64),
        'observation.state.stamp_ns': aligned.state_stamp_ns.astype(np.int64),
        'action.stamp_ns': np.atleast_2d(aligned.action_stamp_ns.T).T.max(1).astype(np.int64),
        'timestamp': (np.arange(n) / fps).astype(np.float32),
        'frame_index': np.arange(n, dtype=np.int64),
        'episode_index': np.full(n, ep_index, np.int64),
        'index': np.arange(first_index, first_index + n, dtype=np.int64),
        'task_index': np.full(n, task_index, np.int64),
    }
    for cam in cameras:
        cols[f'{_video_key(cam)}.stamp_ns'] = aligned.image_stamp_ns[cam].astype(np.int64)
    return cols


def _write_episode_video(data, aligned, cam, videos, key, path, fps, video, *, desc, progress):
    """Append one episode's frames (one per row) to the camera's current file; returns the
    episode's start time in that file and its image stats."""
    from tqdm import tqdm

    samples = []
    wanted = aligned.image_index[cam]
    it = data.frames(cam, np.unique(wanted))
    frame_idx, frame = next(it)
    from_ts = None
    for k, want in enumerate(
        tqdm(wanted, desc=desc, unit='frame', disable=not progress, leave=False)
    ):
        while frame_idx < want:
            frame_idx, frame = next(it)
        if key not in videos:
            videos[key] = _VideoFile(path, frame.shape[0], frame.shape[1], fps, video)
        if from_ts is None:
            from_ts = videos[key].frames / fps
        videos[key].write(frame)
        if k % 10 == 0:
            samples.append(frame)
    return from_ts, _image_stats(samples)


def _split(file_number: int, chunks_size: int) -> dict:
    chunk_index, file_index = divmod(file_number, chunks_size)
    return {'chunk_index': chunk_index, 'file_index': file_index}


def _arrow_column(parts):
    import pyarrow as pa

    x = np.concatenate(parts)
    if x.ndim == 1:
        return pa.array(x)
    return pa.array(list(x), type=pa.list_(pa.from_numpy_dtype(x.dtype)))


@dataclass(frozen=True)
class FileLimits:
    """When LeRobot starts a new file (its defaults); episodes never straddle two files."""

    data_bytes: int = 100 * 10**6
    video_bytes: int = 200 * 10**6
    chunks_size: int = 1000  # files per chunk folder


def write_lerobot_v3(
    episodes,
    out_dir: Path,
    *,
    fps: float,
    robot_type: str = 'aloha',
    video: VideoConfig = VideoConfig(),
    limits: FileLimits = FileLimits(),
    progress: bool = True,
) -> Path:
    """`episodes`: iterable of (EpisodeData, AlignedEpisode) pairs. Returns `out_dir`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    if (out_dir / 'meta' / 'info.json').exists():
        raise FileExistsError(f'{out_dir} already holds a dataset; choose a new folder')
    (out_dir / 'meta').mkdir(parents=True, exist_ok=True)
    pending: dict[str, list] = {}  # columns of the data file being filled
    pending_bytes = 0
    data_file = 0

    def flush_data():
        path = out_dir / DATA_PATH.format(**_split(data_file, limits.chunks_size))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({k: _arrow_column(v) for k, v in pending.items()}), path)
        pending.clear()

    episode_rows: list[dict] = []
    tasks: dict[str, int] = {}
    videos: dict[str, _VideoFile] = {}
    video_file: dict[str, int] = {}
    feature_stats: dict[str, list[dict]] = {}
    cameras: tuple[str, ...] | None = None
    index = 0
    for ep_index, (data, aligned) in enumerate(episodes):
        data: EpisodeData
        aligned: AlignedEpisode
        cams = tuple(sorted(aligned.image_index))
        if cameras is None:
            cameras = cams
        elif cams != cameras:
            raise ValueError(
                f"{data.bag_dir}: cameras {cams} differ from the first episode's "
                f'{cameras}; export them separately'
            )
        task = aligned.instruction or 'unspecified task'
        task_index = tasks.setdefault(task, len(tasks))
        n = aligned.length
        cols = _frame_columns(aligned, fps, ep_index, index, task_index, cameras)
        for key, value in cols.items():
            pending.setdefault(key, []).append(value)
        pending_bytes += sum(v.nbytes for v in cols.values())
        where = _split(data_file, limits.chunks_size)
        row = {
            'episode_index': ep_index,
            'tasks': [task],
            'length': n,
            'data/chunk_index': where['chunk_index'],
            'data/file_index': where['file_index'],
            'dataset_from_index': index,
            'dataset_to_index': index + n,
            'meta/episodes/chunk_index': 0,
            'meta/episodes/file_index': 0,
            'success': aligned.success,
            'final_reward': aligned.final_reward,
            'source_bag': str(data.bag_dir),
            'episode_id': data.meta.episode_id,
        }
        if pending_bytes >= limits.data_bytes:
            flush_data()
            data_file += 1
            pending_bytes = 0
        for key in (*VECTOR_FEATURES, 'next.reward'):
            s = _stats(cols[key])
            feature_stats.setdefault(key, []).append(s)
            for stat, v in s.items():
                row[f'stats/{key}/{stat}'] = v
        for cam in cameras:
            key = _video_key(cam)
            current = videos.get(key)
            if current is not None and current.path.stat().st_size >= limits.video_bytes:
                current.close()
                del videos[key]
                video_file[key] += 1
            video_file.setdefault(key, 0)
            where = _split(video_file[key], limits.chunks_size)
            path = out_dir / VIDEO_PATH.format(video_key=key, **where)
            from_ts, s = _write_episode_video(
                data,
                aligned,
                cam,
                videos,
                key,
                path,
                fps,
                video,
                desc=f'episode {ep_index} {cam}',
                progress=progress,
            )
            feature_stats.setdefault(key, []).append(s)
            row.update(
                {
                    f'videos/{key}/chunk_index': where['chunk_index'],
                    f'videos/{key}/file_index': where['file_index'],
                    f'videos/{key}/from_timestamp': from_ts,
                    f'videos/{key}/to_timestamp': from_ts + n / fps,
                }
            )
            for stat, v in s.items():
                row[f'stats/{key}/{stat}'] = v
        episode_rows.append(row)
        index += n
        logger.info(
            'episode %d (%s): %d frames, success=%s',
            ep_index,
            data.meta.episode_id,
            n,
            aligned.success,
        )
    if not episode_rows:
        raise ValueError('no episodes to export')
    if pending:
        flush_data()
    for v in videos.values():
        v.close()
    episodes_path = out_dir / EPISODES_PATH
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
    pq.write_table(_tasks_table(list(tasks)), out_dir / 'meta' / 'tasks.parquet')
    stats = {k: _merge_stats(v) for k, v in feature_stats.items()}
    (out_dir / 'meta' / 'stats.json').write_text(json.dumps(stats, indent=2))

    features = {}
    names = {'motors': list(COMMAND_JOINT_NAMES)}
    for key in VECTOR_FEATURES:
        features[key] = {'dtype': 'float32', 'shape': [14], 'names': names}
    for key, dtype in (
        ('next.reward', 'float32'),
        ('next.done', 'bool'),
        ('next.success', 'bool'),
        ('intervention', 'bool'),
        ('stamp_ns', 'int64'),
        ('action.stamp_ns', 'int64'),
    ):
        features[key] = {'dtype': dtype, 'shape': [1], 'names': None}
    features['observation.state.stamp_ns'] = {
        'dtype': 'int64',
        'shape': [2],
        'names': ['left', 'right'],
    }
    for key, v in videos.items():
        features[key] = {
            'dtype': 'video',
            'shape': [v.height, v.width, 3],
            'names': ['height', 'width', 'channels'],
            'info': {
                'video.height': v.height,
                'video.width': v.width,
                'video.codec': 'h264' if '264' in video.codec else video.codec,
                'video.pix_fmt': video.pix_fmt,
                'video.is_depth_map': False,
                'video.fps': fps,
                'video.channels': 3,
                'has_audio': False,
            },
        }
        features[f'{key}.stamp_ns'] = {'dtype': 'int64', 'shape': [1], 'names': None}
    for key in ('timestamp',):
        features[key] = {'dtype': 'float32', 'shape': [1], 'names': None}
    for key in ('frame_index', 'episode_index', 'index', 'task_index'):
        features[key] = {'dtype': 'int64', 'shape': [1], 'names': None}
    info = {
        'codebase_version': CODEBASE_VERSION,
        'robot_type': robot_type,
        'total_episodes': len(episode_rows),
        'total_frames': index,
        'total_tasks': len(tasks),
        'chunks_size': limits.chunks_size,
        'data_files_size_in_mb': limits.data_bytes // 10**6,
        'video_files_size_in_mb': limits.video_bytes // 10**6,
        'fps': fps,
        'splits': {'train': f'0:{len(episode_rows)}'},
        'data_path': DATA_PATH,
        'video_path': VIDEO_PATH if videos else None,
        'features': features,
    }
    (out_dir / 'meta' / 'info.json').write_text(json.dumps(info, indent=4))
    return out_dir
