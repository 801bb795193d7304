"""Camera intrinsics in the ROS camera_info YAML layout (camera_calibration_parsers), as
`cameracalibrator` and `halo-ros calibrate camera` write it:

    image_width: 640
    image_height: 480
    camera_name: cam_high
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    projection_matrix: {rows: 3, cols: 4, data: [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0]}
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

_IDENTITY3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')


class IntrinsicsError(ValueError):
    """A camera_info file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    k: tuple[float, ...]  # 3x3 row-major; all zero = uncalibrated (the ROS convention)
    d: tuple[float, ...] = (0.0,) * 5
    distortion_model: str = 'plumb_bob'
    r: tuple[float, ...] = _IDENTITY3
    p: tuple[float, ...] = ()  # 3x4; () = derived from k
    camera_name: str = ''

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f'image size must be > 0, got {self.width}x{self.height}')
        for name, size in (('k', 9), ('r', 9)):
            if len(getattr(self, name)) != size:
                raise ValueError(f'{name} needs {size} values, got {len(getattr(self, name))}')
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f'distortion_model {self.distortion_model!r} not in {DISTORTION_MODELS}'
            )
        values = (*self.k, *self.d, *self.r, *self.p)
        if not all(math.isfinite(v) for v in values):
            raise ValueError('k, d, r and p must be finite')
        if not self.p:
            fx, cx, fy, cy = self.k[0], self.k[2], self.k[4], self.k[5]
            object.__setattr__(self, 'p', (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0))
        if len(self.p) != 12:
            raise ValueError(f'p needs 12 values, got {len(self.p)}')

    @classmethod
    def uncalibrated(cls, width: int, height: int, camera_name: str = '') -> 'CameraIntrinsics':
        return cls(width, height, (0.0,) * 9, camera_name=camera_name)

    @property
    def calibrated(self) -> bool:
        return self.k[0] != 0.0

    def scaled_to(self, width: int, height: int) -> 'CameraIntrinsics':
        """The same lens at another resolution (same field of view: the sensor was binned)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        k = list(self.k)
        k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
        p = list(self.p)
        p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx, p[3] * sx, p[5] * sy, p[6] * sy
        return replace(self, width=width, height=height, k=tuple(k), p=tuple(p))

    def to_dict(self) -> dict:
        def matrix(rows, cols, data):
            return {'rows': rows, 'cols': cols, 'data': [float(v) for v in data]}

        return {
            'image_width': self.width,
            'image_height': self.height,
            'camera_name': self.camera_name,
            'camera_matrix': matrix(3, 3, self.k),
            'distortion_model': self.distortion_model,
            'distortion_coefficients': matrix(1, len(self.d), self.d),
            'rectification_matrix': matrix(3, 3, self.r),
            'projection_matrix': matrix(3, 4, self.p),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding='utf-8')


def load(path: str | Path) -> CameraIntrinsics:
    """Read a camera_info YAML; IntrinsicsError naming the file and the field."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding='utf-8'))
        return parse(document)
    except IntrinsicsError as error:
        raise IntrinsicsError(f'{path}: {error}') from None
    except OSError as error:
        raise IntrinsicsError(f'{path}: cannot read: {error.strerror}') from None


def parse(document) -> CameraIntrinsics:
    if not isinstance(document, dict):
        raise IntrinsicsError(f'expected a mapping, got {type(document).__name__}')

    def number(key: str) -> int:
        value = document.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IntrinsicsError(f'{key}: expected an integer, got {value!r}')
        return value

    def matrix(key: str, rows: int, cols: int | None) -> tuple[float, ...]:
        value = document.get(key)
        if not isinstance(value, dict) or not isinstance(value.get('data'), list):
            raise IntrinsicsError(f'{key}: expected {{rows, cols, data: [...]}}, got {value!r}')
        data, got_rows, got_cols = value['data'], value.get('rows'), value.get('cols')
        shape_ok = got_rows == rows and (cols is None or got_cols == cols)
        if not shape_ok or not isinstance(got_cols, int) or got_rows * got_cols != len(data):
            raise IntrinsicsError(
                f'{key}: expected {rows}x{cols or "n"} with as many values, got rows {got_rows}, '
                f'cols {got_cols}, {len(data)} values'
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in data):
            raise IntrinsicsError(f'{key}.data: expected numbers, got {data!r}')
        return tuple(float(v) for v in data)

    model = document.get('distortion_model', 'plumb_bob')
    if model not in DISTORTION_MODELS:
        raise IntrinsicsError(f'distortion_model: {model!r} is not one of {DISTORTION_MODELS}')
    fields = {
        'width': number('image_width'),
        'height': number('image_height'),
        'k': matrix('camera_matrix', 3, 3),
        'd': matrix('distortion_coefficients', 1, None),
        'distortion_model': model,
        'r': (
            matrix('rectification_matrix', 3, 3)
            if 'rectification_matrix' in document
            else _IDENTITY3
        ),
        'p': matrix('projection_matrix', 3, 4) if 'projection_matrix' in document else (),
        'camera_name': str(document.get('camera_name') or ''),
    }
    try:
        return CameraIntrinsics(**fields)
    except ValueError as error:
        raise IntrinsicsError(str(error)) from None
