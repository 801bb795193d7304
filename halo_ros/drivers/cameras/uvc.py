"""UVC cameras (and video files) through OpenCV's VideoCapture.

A file stands in for a webcam in tests: reaching its end reads like an unplug, and the stream
reopens it from the start. Frames are paced to the configured rate here, since a file (unlike a
device) delivers as fast as it is read.
"""

import logging
import time

import numpy as np

from halo_ros.drivers.cameras.config import CameraConfig
from halo_ros.drivers.cameras.source import CameraDisconnected, Frame, FrameSource

log = logging.getLogger(__name__)


class UvcSource(FrameSource):
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self._capture = None
        self._next_s = 0.0

    def open(self) -> None:
        import cv2

        device = int(self.config.device) if self.config.device.isdigit() else self.config.device
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            capture.release()
            raise CameraDisconnected(f'{self.config.name}: cannot open {self.config.device!r}')
        # A device may ignore these (it keeps its nearest mode); frames are then resized on read.
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        capture.set(cv2.CAP_PROP_FPS, self.config.fps)
        self._capture = capture
        self._next_s = time.monotonic()

    def read(self, timeout_s: float) -> Frame:
        import cv2

        if self._capture is None:
            raise CameraDisconnected(f'{self.config.name}: not open')
        delay = self._next_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_s = max(self._next_s + 1.0 / self.config.fps, time.monotonic() - timeout_s)
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            raise CameraDisconnected(f'{self.config.name}: no frame from {self.config.device!r}')
        if bgr.shape[:2] != (self.config.height, self.config.width):
            bgr = cv2.resize(bgr, (self.config.width, self.config.height), cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        return Frame(rgb=rgb, stamp_ns=time.time_ns())

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
