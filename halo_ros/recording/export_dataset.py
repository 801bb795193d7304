"""Export recorded episodes (rosbag2/MCAP) as a LeRobotDataset v3 and/or ALOHA HDF5 files.

Each episode is resampled from its real stamps onto the control-rate grid (default 50 Hz):
every row holds the latest follower state, camera frames and executed command stamped at or
before that tick. Episodes are kept whatever their outcome; success and reward go with them.
Bags left unfinished by a killed recorder are skipped unless --recover salvages them first; a bag
still being recorded is always skipped, and never touched.

    halo-ros export-dataset episodes/ --out datasets/cups --format both
"""

import logging
from pathlib import Path

from halo_ros.recording.episode_meta import EpisodeStatus, read_sidecar
from halo_ros.recording.resample import CONTROL_HZ

logger = logging.getLogger(__name__)


def find_episodes(paths) -> list[Path]:
    """Bag folders among `paths`: a bag itself, or a folder whose sub-folders are bags."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f'no episode folder {p}')
        if any(p.glob('*.mcap')):
            found.append(p)
        else:
            found += sorted(q for q in p.iterdir() if q.is_dir() and any(q.glob('*.mcap')))
    return found


def add_arguments(parser) -> None:
    parser.add_argument('episodes', nargs='+', help='episode bag folders, or folders of them')
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--format', choices=('lerobot', 'aloha', 'both'), default='both')
    parser.add_argument('--fps', type=float, default=CONTROL_HZ, help='control rate of the grid')
    parser.add_argument('--robot-type', default='aloha', help='LeRobot info.json robot_type')
    parser.add_argument('--vcodec', default='libx264', help='ffmpeg encoder for LeRobot videos')
    parser.add_argument('--crf', type=int, default=23, help='video quality (lower = better)')
    parser.add_argument(
        '--data-file-mb',
        type=float,
        default=100,
        help='LeRobot: start a new parquet file after this much data',
    )
    parser.add_argument(
        '--video-file-mb',
        type=float,
        default=200,
        help='LeRobot: start a new mp4 after this much video',
    )
    parser.add_argument(
        '--jpeg-quality',
        type=int,
        default=None,
        help='ALOHA HDF5: store JPEG frames (Mobile ALOHA layout) at this quality',
    )
    parser.add_argument(
        '--only-success',
        action='store_true',
        help='skip episodes not marked successful (default: keep all)',
    )
    parser.add_argument(
        '--recover',
        action='store_true',
        help='salvage bags a killed recorder left unfinished, then export them',
    )
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def load_episodes(bags, *, fps: float, recover: bool, only_success: bool):
    """Yield (EpisodeData, AlignedEpisode) for each usable bag, logging why others are skipped."""
    from halo_ros.recording.episode_lock import LiveEpisodeError, lock_holder
    from halo_ros.recording.episode_reader import read_episode
    from halo_ros.recording.recover import is_complete, mcap_file, recover_episode
    from halo_ros.recording.resample import align_episode

    for bag in bags:
        if not is_complete(mcap_file(bag)):
            if not recover:
                holder = lock_holder(bag)
                why = f'being recorded by {holder}' if holder else 'unfinished (recorder killed?)'
                logger.warning('%s is %s; skipped%s', bag, why, '' if holder else ', use --recover')
                continue
            try:
                recover_episode(bag)
            except LiveEpisodeError as err:
                logger.warning('skipping %s', err)
                continue
        try:
            status = read_sidecar(bag).status
        except FileNotFoundError:
            status = EpisodeStatus.COMPLETE
        if status in (EpisodeStatus.DISK_FULL, EpisodeStatus.FAILED):
            logger.warning('%s stopped early (%s); exporting what it holds', bag, status.value)
        data = read_episode(bag)
        try:
            aligned = align_episode(data, fps)
        except ValueError as err:
            logger.warning('skipping %s: %s', bag, err)
            continue
        if only_success and not aligned.success:
            logger.info('skipping %s: not marked successful', bag)
            continue
        yield data, aligned


def run(args) -> int:
    from tqdm import tqdm

    from halo_ros.recording.aloha_hdf5 import write_aloha_episode
    from halo_ros.recording.lerobot_v3 import FileLimits, VideoConfig, write_lerobot_v3

    bags = find_episodes(args.episodes)
    if not bags:
        logger.error('no episode bags found in %s', args.episodes)
        return 1
    out = Path(args.out)
    progress = not args.no_progress
    kept = list(
        load_episodes(
            tqdm(bags, desc='episodes', disable=not progress),
            fps=args.fps,
            recover=args.recover,
            only_success=args.only_success,
        )
    )
    if not kept:
        logger.error('none of the %d bags could be exported', len(bags))
        return 1
    if args.format in ('aloha', 'both'):
        for i, (data, aligned) in enumerate(tqdm(kept, desc='aloha hdf5', disable=not progress)):
            write_aloha_episode(
                out / 'aloha' / f'episode_{i}.hdf5',
                data,
                aligned,
                jpeg_quality=args.jpeg_quality,
                progress=progress,
            )
    if args.format in ('lerobot', 'both'):
        write_lerobot_v3(
            kept,
            out / 'lerobot',
            fps=args.fps,
            robot_type=args.robot_type,
            video=VideoConfig(codec=args.vcodec, crf=args.crf),
            limits=FileLimits(
                data_bytes=int(args.data_file_mb * 10**6),
                video_bytes=int(args.video_file_mb * 10**6),
            ),
            progress=progress,
        )
    logger.info('exported %d of %d episodes to %s', len(kept), len(bags), out)
    return 0
