"""`halo-ros calibrate camera` on synthetic checkerboard renders with known intrinsics."""

import numpy as np
import pytest

from halo_ros import cli
from halo_ros.calibrate.camera import calibrate_images
from halo_ros.drivers.cameras import intrinsics as intrinsics_io

cv2 = pytest.importorskip('cv2')

WIDTH, HEIGHT = 640, 480
K_TRUE = np.array([[520.0, 0, 318.0], [0, 515.0, 242.0], [0, 0, 1]])
BOARD = (9, 6)  # inner corners
SQUARE_MM = 25.0
PX_PER_SQUARE = 40  # texture resolution


def _board_texture() -> np.ndarray:
    columns, rows = BOARD[0] + 1, BOARD[1] + 1
    squares = (np.indices((rows, columns)).sum(axis=0) % 2).astype(np.uint8) * 255
    texture = np.kron(squares, np.ones((PX_PER_SQUARE, PX_PER_SQUARE), np.uint8))
    return np.pad(texture, PX_PER_SQUARE, constant_values=255)  # white margin, as printed


def _render(rotation_deg, translation_m) -> np.ndarray:
    """A pinhole photo of the board: homography K [r1 r2 t] from texture pixels to the image."""
    rotation, _ = cv2.Rodrigues(np.radians(np.asarray(rotation_deg, float)))
    metres_per_px = SQUARE_MM / 1000.0 / PX_PER_SQUARE
    # texture pixel -> board metres (the first inner corner is the board origin)
    to_board = np.array(
        [
            [metres_per_px, 0, -2 * PX_PER_SQUARE * metres_per_px],
            [0, metres_per_px, -2 * PX_PER_SQUARE * metres_per_px],
            [0, 0, 1],
        ]
    )
    extrinsic = np.column_stack([rotation[:, 0], rotation[:, 1], translation_m])
    homography = K_TRUE @ extrinsic @ to_board
    image = cv2.warpPerspective(
        _board_texture(), homography, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderValue=200
    )
    return image


POSES = [
    ((0, 0, 0), (-0.10, -0.06, 0.45)),
    ((20, 0, 0), (-0.12, -0.05, 0.45)),
    ((-20, 10, 0), (-0.10, -0.08, 0.5)),
    ((0, 25, 5), (-0.08, -0.06, 0.42)),
    ((10, -25, -5), (-0.14, -0.05, 0.5)),
    ((-15, -15, 10), (-0.10, -0.04, 0.55)),
    ((25, 15, 0), (-0.06, -0.07, 0.5)),
    ((5, 5, 30), (-0.05, -0.12, 0.48)),
]


@pytest.fixture(scope='module')
def board_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('board')
    for i, (rotation, translation) in enumerate(POSES):
        cv2.imwrite(str(folder / f'view{i:02d}.png'), _render(rotation, translation))
    cv2.imwrite(str(folder / 'no_board.png'), np.full((HEIGHT, WIDTH), 128, np.uint8))
    return folder


def test_recovers_known_intrinsics_from_synthetic_views(board_images):
    result = calibrate_images(board_images, BOARD, SQUARE_MM, camera_name='cam_high')
    k = np.array(result.intrinsics.k).reshape(3, 3)
    assert result.skipped == ('no_board.png',)
    assert len(result.used) == len(POSES)
    assert result.rms_px < 0.5
    np.testing.assert_allclose(k[[0, 1], [0, 1]], K_TRUE[[0, 1], [0, 1]], rtol=0.02)
    np.testing.assert_allclose(k[:2, 2], K_TRUE[:2, 2], atol=6.0)
    assert (result.intrinsics.width, result.intrinsics.height) == (WIDTH, HEIGHT)


def test_cli_writes_a_camera_info_file(board_images, tmp_path, capsys):
    output = tmp_path / 'cam_high.yaml'
    code = cli.main(
        [
            'calibrate',
            'camera',
            '--images',
            str(board_images),
            '--board',
            '9x6',
            '--square-mm',
            '25',
            '--name',
            'cam_high',
            '--output',
            str(output),
        ]
    )
    assert code == 0
    loaded = intrinsics_io.load(output)
    assert loaded.camera_name == 'cam_high' and loaded.k[0] == pytest.approx(520.0, rel=0.02)
    assert 'no board in: no_board.png' in capsys.readouterr().out


def test_too_few_views_is_refused_with_the_count(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f'v{i}.png'), _render(*POSES[i]))
    with pytest.raises(ValueError, match='2 of 2 images'):
        calibrate_images(tmp_path, BOARD, SQUARE_MM)
