"""Headless rendering of the ALOHA cameras, on one thread that owns the GL context.

EGL/OSMesa contexts belong to the thread that made them (rendering from another thread fails with
EGL_BAD_ACCESS), so a `CameraRig` is created and used on one thread; `RenderLoop` is that thread.
It renders from qpos snapshots on a private MjData, so physics never waits for the renderer.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from halo_ros.sim.scene import CAMERAS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a rendered camera (MuJoCo renders square pixels, no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]


class CameraRig:
    """Renders the configured cameras at one resolution. Use from one thread only."""

    def __init__(
        self,
        model: mujoco.MjModel,
        cameras: tuple[str, ...] = tuple(CAMERAS),
        *,
        width: int = 320,
        height: int = 240,
    ):
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f'unknown camera(s) {unknown}; available: {sorted(CAMERAS)}')
        self.cameras = cameras
        self.width, self.height = width, height
        self._model = model
        self._data = mujoco.MjData(model)
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        self._ids = {c: model.camera(CAMERAS[c]).id for c in cameras}

    def render(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """(height, width, 3) uint8 RGB per camera for the world state `qpos`."""
        self._data.qpos[:] = qpos
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)
        frames = {}
        for name, cam_id in self._ids.items():
            self._renderer.update_scene(self._data, camera=cam_id)
            frames[name] = self._renderer.render()
        return frames

    def intrinsics(self, name: str) -> Intrinsics:
        fovy = np.deg2rad(self._model.cam_fovy[self._ids[name]])
        f = 0.5 * self.height / np.tan(0.5 * fovy)
        return Intrinsics(self.width, self.height, f, f, 0.5 * self.width, 0.5 * self.height)

    def close(self) -> None:
        self._renderer.close()


# frames, stamp (ns) of the snapshot they show
FrameSink = Callable[[dict[str, np.ndarray], int], None]


class RenderLoop(threading.Thread):
    """Renders snapshots at a fixed (wall-clock) rate and hands the frames to `sink` (on this
    thread). `snapshot()` returns (qpos, stamp_ns): the stamp is the time the snapshot shows."""

    def __init__(
        self,
        make_rig: Callable[[], CameraRig],
        snapshot: Callable[[], tuple[np.ndarray, int]],
        sink: FrameSink,
        *,
        rate_hz: float,
        on_ready: Callable[[CameraRig], None] = None,
    ):
        super().__init__(name='sim-render', daemon=True)
        self._make_rig = make_rig
        self._snapshot = snapshot
        self._sink = sink
        self._period = 1.0 / rate_hz
        self._on_ready = on_ready
        self._halt = threading.Event()
        self.frames = 0
        self.late = 0  # frames that started a whole period late (renderer slower than the rate)
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            rig = self._make_rig()
        except BaseException as exc:  # surfaced by the owner: a GL failure must not pass silently
            self.error = exc
            log.error('renderer could not start: %s', exc)
            return
        if self._on_ready is not None:
            self._on_ready(rig)
        deadline = time.monotonic()
        try:
            while not self._halt.is_set():
                qpos, stamp_ns = self._snapshot()
                self._sink(rig.render(qpos), stamp_ns)
                self.frames += 1
                deadline += self._period
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._halt.wait(delay)
                elif -delay > self._period:
                    self.late += 1
                    deadline = time.monotonic()  # drop the backlog instead of bursting
        finally:
            rig.close()
