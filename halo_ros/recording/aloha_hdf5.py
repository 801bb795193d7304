"""Write episodes as ALOHA HDF5 files (`episode_<i>.hdf5`, the layout ACT and HALO read).

    attrs: sim (bool), compress (bool), instruction, episode_id, success, final_reward, fps
    /observations/qpos     (T, 14) follower positions [left 6 + gripper, right 6 + gripper]
    /observations/qvel     (T, 14)
    /observations/effort   (T, 14)
    /observations/images/<cam>   (T, H, W, 3) uint8, chunked one frame per chunk;
                           with compress=True: (T, L) uint8 zero-padded JPEG bytes, and
                           /compress_len (n_cams, T) as Mobile ALOHA writes them
    /action                (T, 14) executed command (or leader positions for pure teleop)
    /reward                (T,) float32        (extra: WMPO/RL)
    /stamp_ns              (T,) int64 grid time; /observations/qpos_stamp_ns (T, 2),
    /action_stamp_ns       (T,) or (T, 2),  /observations/images_stamp_ns/<cam> (T,)  (extras)

Values are float32, as the original ALOHA recorder effectively wrote them (h5py's default for
float data); the stamps are exact int64. Row t pairs the observation at grid time t with the
command executed at t.
"""

import logging
from pathlib import Path

import numpy as np

from halo_ros.recording.episode_reader import EpisodeData
from halo_ros.recording.resample import AlignedEpisode

logger = logging.getLogger(__name__)


def encode_jpeg(frame_rgb: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode('.jpg', frame_rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f'JPEG encoding failed for a frame of shape {frame_rgb.shape}')
    return buf.tobytes()


def write_aloha_episode(
    path: Path,
    data: EpisodeData,
    aligned: AlignedEpisode,
    *,
    jpeg_quality: int | None = None,
    progress: bool = True,
) -> Path:
    """One episode file; `jpeg_quality` switches to the compressed Mobile ALOHA layout."""
    import h5py
    from tqdm import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = aligned.length
    tmp = path.with_suffix('.hdf5.tmp')
    with h5py.File(tmp, 'w') as f:
        f.attrs['sim'] = 'sim' in data.meta.robot.lower()
        f.attrs['compress'] = jpeg_quality is not None
        f.attrs['instruction'] = aligned.instruction
        f.attrs['episode_id'] = data.meta.episode_id
        f.attrs['success'] = -1 if aligned.success is None else int(aligned.success)
        f.attrs['final_reward'] = np.nan if aligned.final_reward is None else aligned.final_reward
        f.attrs['fps'] = aligned.fps
        obs = f.create_group('observations')
        obs.create_dataset('qpos', data=aligned.state.astype(np.float32))
        obs.create_dataset('qvel', data=aligned.velocity.astype(np.float32))
        obs.create_dataset('effort', data=aligned.effort.astype(np.float32))
        obs.create_dataset('qpos_stamp_ns', data=aligned.state_stamp_ns.astype(np.int64))
        f.create_dataset('action', data=aligned.action.astype(np.float32))
        f.create_dataset('action_stamp_ns', data=aligned.action_stamp_ns.astype(np.int64))
        f.create_dataset('reward', data=aligned.reward.astype(np.float32))
        f.create_dataset('stamp_ns', data=aligned.grid_ns.astype(np.int64))
        images = obs.create_group('images')
        stamps = obs.create_group('images_stamp_ns')
        cams = sorted(aligned.image_index)
        compress_len = np.zeros((len(cams), n), np.int64)
        for ci, cam in enumerate(cams):
            stamps.create_dataset(cam, data=aligned.image_stamp_ns[cam].astype(np.int64))
            wanted = aligned.image_index[cam]
            it = data.frames(cam, np.unique(wanted))
            frame_idx, frame = next(it)
            encoded: list[bytes] = []
            dset = None
            for t, want in enumerate(
                tqdm(
                    wanted,
                    desc=f'{path.name} {cam}',
                    unit='frame',
                    disable=not progress,
                    leave=False,
                )
            ):
                while frame_idx < want:
                    frame_idx, frame = next(it)
                if jpeg_quality is not None:
                    encoded.append(encode_jpeg(frame, jpeg_quality))
                    continue
                if dset is None:
                    dset = images.create_dataset(
                        cam, (n, *frame.shape), np.uint8, chunks=(1, *frame.shape)
                    )
                dset[t] = frame
            if jpeg_quality is not None:
                width = max(len(b) for b in encoded)
                padded = np.zeros((n, width), np.uint8)
                for t, b in enumerate(encoded):
                    padded[t, : len(b)] = np.frombuffer(b, np.uint8)
                    compress_len[ci, t] = len(b)
                images.create_dataset(cam, data=padded, chunks=(1, width))
        if jpeg_quality is not None:
            f.create_dataset('compress_len', data=compress_len)
    tmp.replace(path)
    return path
