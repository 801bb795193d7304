"""The one seam every camera driver implements."""

import abc
from dataclasses import dataclass

import numpy as np

from halo_ros.drivers.cameras.intrinsics import CameraIntrinsics


class CameraDisconnected(RuntimeError):
    """The device is gone (unplugged, reset, file ended); the stream reconnects."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # (height, width, 3) uint8, RGB order
    stamp_ns: int  # time.time_ns() when the frame reached the host (stamps are wall clock)


class FrameSource(abc.ABC):
    """open() -> read() ... -> close(); after CameraDisconnected, close() then open() again."""

    @abc.abstractmethod
    def open(self) -> None:
        """Find and start the device; CameraDisconnected if it is not there."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> Frame:
        """The next frame; CameraDisconnected if none arrives within `timeout_s`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice or after a failed open()."""

    def factory_intrinsics(self) -> CameraIntrinsics | None:
        """Intrinsics the device itself knows (RealSense), valid after open(); else None."""
        return None
