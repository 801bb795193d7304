"""Checkerboard camera intrinsics with OpenCV, written as a ROS camera_info YAML.

Take 15-30 photos of a flat printed checkerboard filling different parts of the frame at
different tilts (`board` counts inner corners, e.g. 9x6 on a 10x7-square board), all at the
resolution the camera will stream at. Images without the full board are skipped and listed.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.drivers.cameras.intrinsics import CameraIntrinsics

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')
MIN_VIEWS = 5  # fewer constrain the focal length and distortion poorly


@dataclass(frozen=True)
class CameraCalibration:
    intrinsics: CameraIntrinsics
    rms_px: float  # reprojection error over every corner used
    used: tuple[str, ...]  # image names with the full board
    skipped: tuple[str, ...]  # without it


def board_points(columns: int, rows: int, square_mm: float) -> np.ndarray:
    """(rows*columns, 3) float32 corner positions on the board plane, in metres."""
    grid = np.mgrid[0:columns, 0:rows].T.reshape(-1, 2)
    points = np.zeros((columns * rows, 3), np.float32)
    points[:, :2] = grid * square_mm / 1000.0
    return points


def calibrate_images(
    folder: str | Path, board: tuple[int, int], square_mm: float, *, camera_name: str = ''
) -> CameraCalibration:
    import cv2

    columns, rows = board
    if columns < 2 or rows < 2 or square_mm <= 0:
        raise ValueError(f'board {columns}x{rows} inner corners, square {square_mm} mm is invalid')
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f'{folder}: no {"/".join(IMAGE_SUFFIXES)} images')
    size = None
    object_points, image_points, used, skipped = [], [], [], []
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError(f'{path}: not a readable image')
        if size is None:
            size = gray.shape[::-1]
        elif gray.shape[::-1] != size:
            raise ValueError(
                f'{path}: {gray.shape[1]}x{gray.shape[0]}, but the first image is '
                f'{size[0]}x{size[1]}; calibrate one resolution at a time'
            )
        found, corners = cv2.findChessboardCorners(
            gray, (columns, rows), cv2.CALIB_CB_ADAPTIVE_THRESH + cv2.CALIB_CB_NORMALIZE_IMAGE
        )
        if not found:
            skipped.append(path.name)
            continue
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
        object_points.append(board_points(columns, rows, square_mm))
        image_points.append(corners)
        used.append(path.name)
    if len(used) < MIN_VIEWS:
        raise ValueError(
            f'{folder}: the {columns}x{rows} board is in {len(used)} of {len(paths)} images; '
            f'need at least {MIN_VIEWS} (check --board counts inner corners)'
        )
    rms, k, d, _, _ = cv2.calibrateCamera(object_points, image_points, size, None, None)
    log.info('calibrated from %d images, RMS reprojection error %.3f px', len(used), rms)
    intrinsics = CameraIntrinsics(
        int(size[0]),
        int(size[1]),
        tuple(float(v) for v in k.reshape(-1)),
        d=tuple(float(v) for v in d.reshape(-1)[:5]),
        camera_name=camera_name,
    )
    return CameraCalibration(intrinsics, float(rms), tuple(used), tuple(skipped))
