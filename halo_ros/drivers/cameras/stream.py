"""A capture thread per camera that survives unplugging: it reopens the device with backoff.

Frames go to a callback with the intrinsics for their size (from the camera_info file, else the
device's factory calibration, else uncalibrated). A configuration the device refuses (ValueError
from open()) is not retried: it would fail the same way forever; `fatal` says why.
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from halo_ros.drivers.cameras import intrinsics as intrinsics_io
from halo_ros.drivers.cameras.config import CameraConfig, CameraDriver
from halo_ros.drivers.cameras.intrinsics import CameraIntrinsics
from halo_ros.drivers.cameras.source import CameraDisconnected, Frame, FrameSource
from halo_ros.paths import calibration_file

log = logging.getLogger(__name__)


def make_source(config: CameraConfig) -> FrameSource:
    if config.driver is CameraDriver.REALSENSE:
        from halo_ros.drivers.cameras.realsense import RealSenseSource

        return RealSenseSource(config)
    from halo_ros.drivers.cameras.uvc import UvcSource

    return UvcSource(config)


def resolve_intrinsics_path(name: str) -> Path:
    """An absolute or existing path as is; a bare name under the package's calibration/."""
    path = Path(name).expanduser()
    return path if path.is_absolute() or path.exists() else calibration_file(name)


class CameraStream:
    def __init__(
        self,
        config: CameraConfig,
        on_frame: Callable[[Frame, CameraIntrinsics], None],
        *,
        source: FrameSource | None = None,
    ) -> None:
        self.config = config
        self._on_frame = on_frame
        self.source = source or make_source(config)
        self._file_intrinsics = (
            intrinsics_io.load(resolve_intrinsics_path(config.intrinsics))
            if config.intrinsics
            else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames = 0
        self.reconnects = 0  # times the device was lost after streaming
        self.connected = False
        self.last_error = ''
        self.fatal: Exception | None = None

    def start(self) -> 'CameraStream':
        self._thread = threading.Thread(target=self._run, name=f'camera-{self.config.name}')
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def intrinsics_for(self, width: int, height: int) -> CameraIntrinsics:
        base = self._file_intrinsics or self.source.factory_intrinsics()
        if base is None:
            return CameraIntrinsics.uncalibrated(width, height, self.config.name)
        return base.scaled_to(width, height)

    def _run(self) -> None:
        backoff_s = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                self.source.open()
            except CameraDisconnected as error:
                if str(error) != self.last_error:
                    log.warning(
                        '%s: %s; retrying every <= %g s',
                        self.config.name,
                        error,
                        self.config.reconnect_max_s,
                    )
                self.last_error = str(error)
                self._stop.wait(backoff_s)
                backoff_s = min(2 * backoff_s, self.config.reconnect_max_s)
                continue
            except Exception as error:  # noqa: BLE001 (reported through `fatal`, not retried)
                log.error('%s: %s', self.config.name, error)
                self.fatal = error
                self.source.close()
                return
            self.connected, backoff_s = True, self.config.reconnect_min_s
            log.info('%s: streaming', self.config.name)
            try:
                while not self._stop.is_set():
                    frame = self.source.read(self.config.read_timeout_s)
                    height, width = frame.rgb.shape[:2]
                    self._on_frame(frame, self.intrinsics_for(width, height))
                    self.frames += 1
            except CameraDisconnected as error:
                self.reconnects += 1
                self.last_error = str(error)
                log.warning('%s: lost (%s); reconnecting', self.config.name, error)
            finally:
                self.connected = False
                self.source.close()
