"""ament_python package metadata; also installable with pip into a venv (see README)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'halo_ros'


def tree(folder):
    """(install dir, files) pairs for every file below `folder`, keeping sub-folders."""
    pairs = {}
    for path in glob(f'{folder}/**/*', recursive=True):
        if os.path.isfile(path) and '__pycache__' not in path:
            pairs.setdefault(os.path.join('share', PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(pairs.items())


# Nodes are `ros2 run halo_ros <name>` executables; `halo-ros` is the user-facing command.
NODES = {
    'policy_node': 'halo_ros.nodes.policy_node:main',
    'sim_node': 'halo_ros.nodes.sim_node:main',
    'recorder_node': 'halo_ros.nodes.recorder_node:main',
    'controller_node': 'halo_ros.nodes.controller_node:main',
    'camera_node': 'halo_ros.nodes.camera_node:main',
}

# rclpy and the message packages come from ROS itself on a colcon machine; in a plain venv they
# come from the ros-jazzy-* wheels. They live in an extra so a colcon build never pip-resolves
# them (and never pins them against the system's ROS).
ROS_WHEELS = [
    'ros-jazzy-rclpy',
    'ros-jazzy-rmw-fastrtps-cpp',
    'ros-jazzy-sensor-msgs',
    'ros-jazzy-trajectory-msgs',
    'ros-jazzy-std-msgs',
    'ros-jazzy-std-srvs',
    'ros-jazzy-diagnostic-msgs',
]

# A real ALOHA's drivers: Dynamixel buses, RealSense and UVC cameras.
HARDWARE = ['dynamixel-sdk>=3.7', 'pyrealsense2>=2.55', 'opencv-python-headless>=4.8,<5']
# The policy's link to `halo-ros serve` (OpenCV resizes and JPEG-encodes the frames).
TRANSPORT = ['pyzmq>=25', 'msgpack>=1.0', 'opencv-python-headless>=4.8,<5']
# The robot computer without a GPU: ROS, the drivers, the controller, the recorder and the policy
# node with `backend:=remote`. Neither torch nor onnxruntime: the model runs in `halo-ros serve`
# (README: Robot computer without a GPU; tests/test_robot_install.py builds it).
ROBOT = sorted({*ROS_WHEELS, *HARDWARE, *TRANSPORT, 'rosbags>=0.10'})

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['tests', 'tests.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        *tree('launch'),
        *tree('config'),
        *tree('models'),
        *tree('calibration'),
    ],
    python_requires='>=3.10',
    install_requires=[
        'numpy>=1.26',
        'pyyaml>=6',
    ],
    extras_require={
        'ros': ROS_WHEELS,
        'sim': [
            'mujoco>=3.1,<3.9',
            'gym-aloha>=0.1.5',
            'dm-control>=1.0.15,<1.1',
            'scipy>=1.10',
            'dynamixel-sdk>=3.7',
        ],
        'model': ['torch>=2.3', 'safetensors>=0.4', 'tokenizers>=0.19', 'pillow>=9'],
        'engine': ['onnx>=1.16', 'onnxruntime>=1.18', 'onnxscript>=0.1', 'tqdm>=4'],
        'hardware': HARDWARE,
        'robot': ROBOT,
        'transport': TRANSPORT,
        'recording': [
            'rosbags>=0.10',
            'h5py>=3.9',
            'pyarrow>=14',
            'imageio-ffmpeg>=0.4',
            'tqdm>=4',
            'opencv-python-headless>=4.8,<5',
        ],
        # halo-ros report / view / --plot: plots (matplotlib brings pillow), bags, the Foxglove
        # WebSocket server.
        'viz': ['matplotlib>=3.8', 'pillow>=9', 'rosbags>=0.10', 'foxglove-sdk>=0.30,<1'],
        'dev': ['pytest>=8', 'mcap>=1.1', 'mcap-ros2-support>=0.5', 'ruff', 'websockets>=12'],
    },
    entry_points={
        'console_scripts': [
            'halo-ros = halo_ros.cli:main',
            *(f'{name} = {target}' for name, target in NODES.items()),
        ],
    },
    zip_safe=False,
    maintainer='halo_ros developers',
    maintainer_email='halo-ros@example.org',
    description='Run the HALO vision-language-action model on a Mobile ALOHA through ROS 2.',
    license='Apache-2.0',
)
