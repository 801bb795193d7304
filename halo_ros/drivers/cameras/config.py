"""What one camera is: driver, which device, resolution and rate, intrinsics file."""

import enum
from dataclasses import dataclass


class CameraDriver(enum.Enum):
    REALSENSE = 'realsense'  # Intel RealSense (ALOHA: D405 wrists, D435 high) by serial
    UVC = 'uvc'  # any V4L2 webcam through OpenCV: /dev/video* path, index, or a video file


@dataclass(frozen=True)
class CameraConfig:
    name: str  # cam_high, cam_left_wrist, cam_right_wrist: also the topic prefix
    driver: CameraDriver
    width: int = 640  # HALO's cameras are 480x640; the policy resizes to its own input
    height: int = 480
    fps: float = 30.0
    serial: str = ''  # RealSense: `rs-enumerate-devices -s`; '' = the only one connected
    device: str = ''  # UVC: '/dev/video0', '0' or a file path
    intrinsics: str = ''  # camera_info YAML (calibration/); '' = factory (RealSense) or none
    reconnect_min_s: float = 0.5  # first retry after a lost device; doubles up to the max
    reconnect_max_s: float = 5.0
    read_timeout_s: float = 1.0  # no frame for this long = the device is gone

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f'{self.name}: width/height must be > 0, got {self.width}x{self.height}'
            )
        if not 0 < self.fps <= 1000:
            raise ValueError(f'{self.name}: fps must be in (0, 1000], got {self.fps}')
        if self.driver is CameraDriver.UVC and not self.device:
            raise ValueError(f'{self.name}: a uvc camera needs `device` (/dev/video0, 0 or a file)')
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f'{self.name}: need 0 < reconnect_min_s {self.reconnect_min_s} <= '
                f'reconnect_max_s {self.reconnect_max_s}'
            )
        if self.read_timeout_s <= 0:
            raise ValueError(f'{self.name}: read_timeout_s must be > 0, got {self.read_timeout_s}')
