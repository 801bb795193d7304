"""The robot side without torch: in a process where torch, onnxruntime and every other library
outside halo_ros[robot] cannot be imported, the robot's nodes import, the policy settings read a
trained checkpoint's card, and a remote policy runtime produces chunks with real-time chunking
seams and reasoning cycles from a real engine server in this (full) process. A local backend
there fails saying what to install or to use backend remote.

tests/test_robot_install.py runs the same side from a venv built with only halo_ros[robot]."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from halo_ros.engine.loading import EngineConfig, load_engine
from halo_ros.transport.server import EngineServer, ServerConfig

HW = (120, 160)
# The libraries of the other extras (model, engine, sim, recording's exporters, viz).
NOT_ON_A_ROBOT = (
    'torch', 'onnxruntime', 'onnx', 'onnxscript', 'safetensors', 'tokenizers', 'mujoco',
    'dm_control', 'gym_aloha', 'scipy', 'h5py', 'pyarrow', 'imageio_ffmpeg', 'matplotlib', 'PIL',
    'foxglove', 'tqdm',
)  # fmt: skip
ROBOT_MODULES = (
    'halo_ros.nodes.policy_node',
    'halo_ros.nodes.controller_node',
    'halo_ros.nodes.recorder_node',
    'halo_ros.nodes.camera_node',
    'halo_ros.drivers.cameras.realsense',
    'halo_ros.drivers.cameras.uvc',
    'halo_ros.bringup.up',
    'halo_ros.cli',
)

ROBOT_SIDE = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys, time

    BLOCKED = set(sys.argv[2].split(','))

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition('.')[0] in BLOCKED:
                raise ModuleNotFoundError(f'No module named {name!r} (a robot install)', name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import numpy as np

    for module in sys.argv[3].split(','):
        importlib.import_module(module)

    from halo_ros.engine.loading import BackendUnavailable
    from halo_ros.joints import BIMANUAL_JOINTS as JOINTS
    from halo_ros.runtime.policy import PolicyRuntime
    from halo_ros.runtime.settings import load_policy_engine, policy_settings

    report = {}
    card = policy_settings({'checkpoint': 'halo-tiny-transfer-cube', 'backend': 'remote'})
    report['card'] = [card.values['cameras'], card.values['seam_mode'], card.policy.instruction]
    for backend in ('torch', 'onnxruntime'):
        try:
            load_policy_engine(policy_settings({'backend': backend}))
        except BackendUnavailable as error:
            report[backend] = str(error)

    settings = policy_settings({
        'backend': 'remote', 'server': sys.argv[1], 'remote_timeout_s': 60.0,
        'image_width': 160, 'image_height': 120, 'seam_mode': 'rtc', 'chunk_rate_hz': 5.0,
        'reasoning': True, 'reasoning_period_s': 0.5, 'max_tokens': 4, 'subgoal': True,
        'instruction': 'transfer the cube',
    })
    engine = load_policy_engine(settings)
    seams, chunks, reasoning = [], [], []
    act = engine.act

    def spied_act(observation, reasoning_, noise, seam=None):  # what the actor hands the client
        seams.append(None if seam is None else seam.mode.value)
        return act(observation, reasoning_, noise, seam)

    engine.act = spied_act
    runtime = PolicyRuntime(
        engine, settings.policy, on_chunk=chunks.append,
        on_reasoning=lambda r, accepted: reasoning.append(accepted),
    )
    runtime.start()
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 120
    while (len(chunks) < 3 or not reasoning) and time.monotonic() < deadline:
        now = time.time_ns()
        for camera in settings.policy.assembly.cameras:
            frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            runtime.assembler.add_image(camera, frame, now)
        runtime.assembler.add_joints(JOINTS, np.zeros(14), now)
        time.sleep(0.05)
    runtime.stop(timeout_s=30)
    engine.close()
    report.update(
        chunks=len(chunks), seams=seams, reasoning=reasoning, drops=runtime.drops.counts(),
        loaded=sorted(m for m in BLOCKED if m in sys.modules),
    )
    print(json.dumps(report))
    """
)


@pytest.fixture(scope='module')
def server():
    torch.set_num_threads(1)
    engine = load_engine(EngineConfig(image_hw=HW))
    server = EngineServer(engine, ServerConfig(bind='tcp://127.0.0.1:*')).start()
    yield server
    server.stop()
    engine.close()


def test_robot_side_runs_a_remote_policy_without_torch(server):
    run = subprocess.run(
        [
            sys.executable,
            '-c',
            ROBOT_SIDE,
            server.endpoint,
            ','.join(NOT_ON_A_ROBOT),
            ','.join(ROBOT_MODULES),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report['loaded'] == []
    # The trained checkpoint's card, read without torch: its cameras, its seam (trained with
    # executed prefixes: training-time RTC) and its instruction.
    cameras = 'cam_high,cam_left_wrist,cam_right_wrist'
    assert report['card'] == [cameras, 'prefix', 'transfer the cube to the other arm']
    for backend, extras in (
        ('torch', 'halo_ros[model]'),
        ('onnxruntime', 'halo_ros[model,engine]'),
    ):
        assert extras in report[backend] and 'backend remote' in report[backend], report[backend]
    # Chunks computed by the server; after the first, each carries the rtc seam plan as data.
    assert report['chunks'] >= 3, report
    assert report['seams'][0] is None and 'rtc' in report['seams'][1:], report['seams']
    assert report['reasoning'] and report['reasoning'][0] is True, report
    assert not report['drops'], report['drops']
