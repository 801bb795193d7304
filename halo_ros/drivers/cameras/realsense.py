"""Intel RealSense colour streams through pyrealsense2, selected by serial number.

Each camera runs its own pipeline with the colour stream only (rgb8 at the configured resolution
and rate). A device that disappears makes
wait_for_frames time out; the stream then closes and reopens the pipeline by serial, which finds
the camera again once it is plugged back (or after a USB reset).
"""

import logging
import time

import numpy as np

from halo_ros.drivers.cameras.config import CameraConfig
from halo_ros.drivers.cameras.intrinsics import CameraIntrinsics
from halo_ros.drivers.cameras.source import CameraDisconnected, Frame, FrameSource

log = logging.getLogger(__name__)

# pyrealsense2 distortion models -> ROS camera_info names.
_MODELS = {
    'distortion.brown_conrady': 'plumb_bob',
    'distortion.inverse_brown_conrady': 'plumb_bob',
    'distortion.modified_brown_conrady': 'plumb_bob',
    'distortion.none': 'plumb_bob',
    'distortion.kannala_brandt4': 'equidistant',
}


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as error:  # the wheel imports only with libusb-1.0-0 installed
        raise RuntimeError(
            f'pyrealsense2 is not usable ({error}); `pip install pyrealsense2` and '
            '`apt-get install libusb-1.0-0`'
        ) from error
    return rs


def connected_serials() -> list[str]:
    rs = _rs()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class RealSenseSource(FrameSource):
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self._pipeline = None
        self._intrinsics: CameraIntrinsics | None = None

    def open(self) -> None:
        rs = _rs()
        serials = connected_serials()
        serial = self.config.serial
        if not serial:
            if len(serials) != 1:
                raise CameraDisconnected(
                    f'{self.config.name}: serial is empty and {len(serials)} RealSense devices are '
                    f'connected ({serials}); set `serial`'
                )
            serial = serials[0]
        if serial not in serials:
            raise CameraDisconnected(
                f'{self.config.name}: RealSense {serial} is not connected (found {serials})'
            )
        rs_config = rs.config()
        rs_config.enable_device(serial)
        rs_config.enable_stream(
            rs.stream.color,
            self.config.width,
            self.config.height,
            rs.format.rgb8,
            int(round(self.config.fps)),
        )
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(rs_config)
        except RuntimeError as error:  # e.g. the mode is not supported: not a disconnect
            raise ValueError(
                f'{self.config.name}: RealSense {serial} cannot stream colour '
                f'{self.config.width}x{self.config.height} at {self.config.fps:g} fps: {error}'
            ) from error
        self._pipeline = pipeline
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = stream.get_intrinsics()
        self._intrinsics = CameraIntrinsics(
            i.width,
            i.height,
            (i.fx, 0.0, i.ppx, 0.0, i.fy, i.ppy, 0.0, 0.0, 1.0),
            d=tuple(float(c) for c in i.coeffs),
            distortion_model=_MODELS.get(str(i.model), 'plumb_bob'),
            camera_name=self.config.name,
        )
        log.info('%s: RealSense %s streaming colour', self.config.name, serial)

    def read(self, timeout_s: float) -> Frame:
        if self._pipeline is None:
            raise CameraDisconnected(f'{self.config.name}: not open')
        try:
            frames = self._pipeline.wait_for_frames(int(timeout_s * 1000))
        except RuntimeError as error:
            raise CameraDisconnected(f'{self.config.name}: {error}') from error
        color = frames.get_color_frame()
        if not color:
            raise CameraDisconnected(f'{self.config.name}: a frameset without colour')
        rgb = np.asanyarray(color.get_data()).copy()  # the SDK reuses its buffer
        return Frame(rgb=rgb, stamp_ns=time.time_ns())

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError as error:  # already stopped by a disconnect
                log.debug('%s: pipeline stop: %s', self.config.name, error)
            self._pipeline = None

    def factory_intrinsics(self) -> CameraIntrinsics | None:
        return self._intrinsics
