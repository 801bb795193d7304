"""Camera drivers: intrinsics files, the UVC path on a generated video file (standing in for a
webcam), reconnecting after the device goes away, and camera_node on the ROS graph."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from halo_ros.drivers.cameras import (
    CameraConfig,
    CameraDriver,
    CameraIntrinsics,
    CameraStream,
    IntrinsicsError,
)
from halo_ros.drivers.cameras import intrinsics as intrinsics_io

cv2 = pytest.importorskip('cv2')

WIDTH, HEIGHT, FRAMES = 64, 48, 12


def _video(path: Path, frames: int = FRAMES, size=(WIDTH, HEIGHT)) -> Path:
    """Frame i: red (in RGB) left half, brightness of the right half encodes i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 30, size)
    assert writer.isOpened(), 'OpenCV cannot write MJPG here'
    for i in range(frames):
        bgr = np.zeros((size[1], size[0], 3), np.uint8)
        bgr[:, : size[0] // 2] = (0, 0, 255)  # OpenCV is BGR: this is red
        bgr[:, size[0] // 2 :] = 20 * (i % 12)
        writer.write(bgr)
    writer.release()
    return path


def _wait(condition, timeout_s=10.0, what='condition'):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.01)


def _intrinsics() -> CameraIntrinsics:
    return CameraIntrinsics(
        640,
        480,
        (600.0, 0, 320.0, 0, 605.0, 240.0, 0, 0, 1),
        d=(0.1, -0.2, 0.0, 0.0, 0.05),
        camera_name='cam_high',
    )


def test_intrinsics_round_trip_in_ros_camera_info_layout(tmp_path):
    path = tmp_path / 'cam_high.yaml'
    _intrinsics().save(path)
    document = yaml.safe_load(path.read_text())
    assert document['camera_matrix']['rows'] == 3 and document['distortion_model'] == 'plumb_bob'
    assert document['projection_matrix']['data'][:3] == [600.0, 0.0, 320.0]
    assert intrinsics_io.load(path) == _intrinsics()


def test_intrinsics_scale_with_resolution():
    half = _intrinsics().scaled_to(320, 240)
    assert half.k[0] == 300.0 and half.k[2] == 160.0 and half.k[4] == 302.5 and half.k[5] == 120.0
    assert half.p[0] == 300.0 and half.d == _intrinsics().d


@pytest.mark.parametrize(
    ('change', 'field'),
    [
        (lambda d: d.pop('image_width'), 'image_width'),
        (lambda d: d.update(image_height='480'), 'image_height'),
        (lambda d: d['camera_matrix'].update(rows=2), 'camera_matrix'),
        (lambda d: d['camera_matrix']['data'].pop(), 'camera_matrix'),
        (lambda d: d['distortion_coefficients'].update(data=['a'] * 5), 'distortion_coefficients'),
        (lambda d: d.update(distortion_model='fisheye9'), 'distortion_model'),
        (lambda d: d['camera_matrix']['data'].__setitem__(0, float('nan')), 'finite'),
    ],
)
def test_intrinsics_errors_name_the_field(tmp_path, change, field):
    document = _intrinsics().to_dict()
    change(document)
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(IntrinsicsError, match=field) as error:
        intrinsics_io.load(path)
    assert str(path) in str(error.value)


def test_uvc_stream_from_a_video_file_is_rgb_and_reconnects_at_its_end(tmp_path):
    video = _video(tmp_path / 'cam.avi')
    got = []
    config = CameraConfig(
        'cam_high',
        CameraDriver.UVC,
        WIDTH,
        HEIGHT,
        fps=200.0,
        device=str(video),
        reconnect_min_s=0.05,
        read_timeout_s=0.5,
    )
    stream = CameraStream(config, lambda frame, k: got.append((frame, k))).start()
    try:
        _wait(lambda: len(got) >= FRAMES + 3, what='frames after the file ended once')
    finally:
        stream.stop()
    assert stream.reconnects >= 1, 'the end of the file must read as a lost device'
    frame, k = got[0]
    assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
    red = frame.rgb[:, : WIDTH // 4].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 50, f'not RGB order: {red}'
    brightness = [int(f.rgb[:, -4:].mean()) for f, _ in got[: FRAMES + 2]]
    assert brightness[1] > brightness[0] and brightness[FRAMES] < brightness[FRAMES - 1], (
        'frames must play in order and restart from the first after reopening'
    )
    assert not k.calibrated and (k.width, k.height) == (WIDTH, HEIGHT)
    stamps = [f.stamp_ns for f, _ in got]
    assert stamps == sorted(stamps)


def test_uvc_stream_survives_unplugging_and_uses_the_intrinsics_file(tmp_path):
    video = _video(tmp_path / 'cam.avi', frames=200)
    calibration = tmp_path / 'cam.yaml'
    _intrinsics().save(calibration)
    got = []
    config = CameraConfig(
        'cam_high',
        CameraDriver.UVC,
        320,
        240,
        fps=100.0,
        device=str(video),
        intrinsics=str(calibration),
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    stream = CameraStream(config, lambda frame, k: got.append((frame, k))).start()
    try:
        _wait(lambda: len(got) >= 3, what='first frames')
        os.rename(video, tmp_path / 'away.avi')  # "unplugged": it will not reopen
        _wait(
            lambda: stream.reconnects >= 1 and 'cannot open' in stream.last_error,
            what='the stream to notice and retry',
            timeout_s=20,
        )
        count = len(got)
        assert not stream.connected
        os.rename(tmp_path / 'away.avi', video)  # plugged back
        _wait(lambda: len(got) > count + 3, what='frames after replugging')
    finally:
        stream.stop()
    frame, k = got[-1]
    assert frame.rgb.shape == (240, 320, 3), 'frames are resized to the configured size'
    assert k.k[0] == pytest.approx(300.0) and k.width == 320, 'intrinsics scaled to the frame'


def test_camera_config_refuses_bad_values():
    with pytest.raises(ValueError, match='device'):
        CameraConfig('cam_high', CameraDriver.UVC)
    with pytest.raises(ValueError, match='fps'):
        CameraConfig('cam_high', CameraDriver.REALSENSE, fps=0)


def test_realsense_streams_colour_when_a_device_is_connected():
    from halo_ros.drivers.cameras.realsense import connected_serials

    try:
        serials = connected_serials()
    except RuntimeError as error:
        pytest.skip(f'pyrealsense2 is not usable here: {error}')
    if not serials:
        pytest.skip('needs a RealSense camera plugged in (none connected)')
    got = []
    config = CameraConfig('cam_high', CameraDriver.REALSENSE, 640, 480, 30.0, serial=serials[0])
    stream = CameraStream(config, lambda frame, k: got.append((frame, k))).start()
    try:
        _wait(lambda: len(got) >= 10, what='RealSense frames')
    finally:
        stream.stop()
    assert got[-1][0].rgb.shape == (480, 640, 3) and got[-1][1].calibrated


@pytest.mark.ros
def test_camera_node_publishes_image_and_camera_info(tmp_path):
    import rclpy
    from ros_helpers import spin_until
    from sensor_msgs.msg import CameraInfo, Image

    from halo_ros.nodes.conversions import image_array
    from halo_ros.nodes.topic_monitor import TopicMonitor
    from halo_ros.supervisor import NodeProcess

    video = _video(tmp_path / 'cam.avi', frames=300)
    calibration = tmp_path / 'cam.yaml'
    _intrinsics().save(calibration)
    params = {
        'driver': 'uvc',
        'device': str(video),
        'width': 320,
        'height': 240,
        'fps': 30.0,
        'intrinsics': str(calibration),
    }
    node = NodeProcess(
        'halo_ros.nodes.camera_node',
        params,
        name='cam_left_wrist',
        log_path=str(tmp_path / 'camera_node.log'),
        remaps=(
            ('image_raw', 'cam_left_wrist/image_raw'),
            ('camera_info', 'cam_left_wrist/camera_info'),
        ),
    ).start()
    rclpy.init()
    topics = {'cam_left_wrist/image_raw': Image, 'cam_left_wrist/camera_info': CameraInfo}
    monitor = TopicMonitor(topics, 'cam_test')
    stats = monitor.stats
    try:
        spin_until(
            monitor,
            lambda: all(stats[t].count >= 5 for t in topics),
            60,
            'camera frames and camera_info',
        )
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
        code = node.stop()
    image = stats['cam_left_wrist/image_raw'].last
    info = stats['cam_left_wrist/camera_info'].last
    assert image.encoding == 'rgb8' and image_array(image).shape == (240, 320, 3)
    assert image.header.frame_id == info.header.frame_id == 'cam_left_wrist_optical_frame'
    assert (info.width, info.height) == (320, 240)
    assert list(info.k) == pytest.approx([300.0, 0, 160.0, 0, 302.5, 120.0, 0, 0, 1])
    assert list(info.d) == pytest.approx([0.1, -0.2, 0.0, 0.0, 0.05])
    assert code == 0, (tmp_path / 'camera_node.log').read_text()
