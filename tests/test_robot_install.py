"""The robot computer without a GPU, installed for real: a venv with only `halo_ros[robot]`
(tests/robot_venv.py builds it from the package, cached by setup.py) has no torch and no
onnxruntime, and from it the README's robot command, `halo-ros up serve` (controller, policy node
with backend remote and rtc seams), and a recorder run the graph against the simulator and
`halo-ros serve`, both from the full venv, on loopback: the controller follows the served chunks
and the recorder closes a bag holding them."""

import json
import subprocess
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.node import Node
from rclpy.qos import QoSProfile
from robot_venv import robot_venv, site_packages
from ros_helpers import spin_until
from std_msgs.msg import String
from std_srvs.srv import Trigger
from test_robot_imports import ROBOT_MODULES
from test_transport_failover import free_port, kill, serve

from halo_ros.paths import config_file
from halo_ros.recording.episode_meta import EpisodeStatus, read_sidecar
from halo_ros.recording.recover import mcap_file
from halo_ros.recording.topics import CAMERAS
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.supervisor import ManagedProcess, NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope='module')
def venv():
    return robot_venv()


class RobotNode(NodeProcess):
    """A node executable run by the robot venv's interpreter, in its own environment."""

    def __init__(self, python, env, module, params, log_path):
        super().__init__(module, params, env=env, log_path=str(log_path))
        self.python = str(python)

    def command(self) -> list[str]:
        return [self.python, *super().command()[1:]]


def robot_python(venv, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv['python'], '-c', code], env=venv['env'], capture_output=True, text=True, timeout=120
    )


def test_the_robot_venv_has_neither_torch_nor_onnxruntime(venv):
    for module in ('torch', 'onnxruntime'):
        run = robot_python(venv, f'import {module}')
        assert run.returncode != 0 and 'ModuleNotFoundError' in run.stderr, (module, run.stderr)
    installed = {p.name.split('-')[0].lower() for p in site_packages(venv['venv']).glob('*-info')}
    assert not installed & {'torch', 'onnxruntime', 'onnx', 'mujoco', 'tokenizers'}, installed
    imports = '\n'.join(f'import {module}' for module in ROBOT_MODULES)
    run = robot_python(venv, imports)
    assert run.returncode == 0, run.stderr[-3000:]
    command = subprocess.run(
        [str(Path(venv['python']).parent / 'halo-ros'), '--help'],
        env=venv['env'], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert command.returncode == 0 and 'serve' in command.stdout, command.stderr[-3000:]
    # A local backend there says what to do instead of failing on an import.
    run = robot_python(
        venv,
        'from halo_ros.runtime.settings import load_policy_engine, policy_settings\n'
        "load_policy_engine(policy_settings({'backend': 'torch'}))",
    )
    assert 'BackendUnavailable' in run.stderr and 'backend remote' in run.stderr, run.stderr


class Observer(Node):
    def __init__(self):
        super().__init__('robot_install_observer')
        self.states: list[dict] = []
        self.create_subscription(
            String, 'halo/control_state', self._on_state, QoSProfile(depth=100)
        )

    def _on_state(self, msg):
        self.states.append(json.loads(msg.data))

    @property
    def last(self) -> dict:
        return self.states[-1] if self.states else {}

    def call(self, service: str, timeout_s: float = 30.0):
        client = self.create_client(Trigger, service)
        spin_until(self, client.service_is_ready, 60, f'the service {service}')
        future = client.call_async(Trigger.Request())
        spin_until(self, future.done, timeout_s, f'{service} reply')
        return future.result()


def test_robot_graph_from_the_robot_venv_against_halo_ros_serve(venv, tmp_path):
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    # The simulator's buses answer late in bursts on a loaded 2-core machine (test_control_ros).
    config = yaml.safe_load(config_file('controller.yaml').read_text())
    config['max_consecutive_read_failures'] = 25
    (tmp_path / 'controller.yaml').write_text(yaml.safe_dump(config))
    # The robot computer: README's `halo-ros up serve` (controller, policy with backend remote
    # and config/policy_remote.yaml: JPEG frames, seam auto = rtc), the simulator standing in for
    # the cameras and the arms; and the recorder beside it.
    up_dir, episodes = tmp_path / 'up', tmp_path / 'episodes'
    sets = {
        'controller.config': tmp_path / 'controller.yaml',
        'controller.calibration': 'sim_aloha.yaml',
        'policy.server': endpoint,
        'policy.image_width': 160,
        'policy.image_height': 120,
        'policy.remote_timeout_s': 10.0,
        'policy.chunk_rate_hz': 4.0,
        'policy.reasoning': False,  # reasoning over the link: test_robot_imports
    }
    argv = [venv['python'], '-m', 'halo_ros.cli', 'up', 'serve', '--run-dir', str(up_dir),
            '--engage', 'policy', *(f'--without={c}' for c in CAMERAS),
            *(f'--set={k}={v}' for k, v in sets.items())]  # fmt: skip
    server = serve(endpoint, tmp_path / 'serve.log')  # the GPU computer (the full venv)
    sim = robot = recorder = None

    def log(path) -> str:
        return path.read_text(errors='replace')[-3000:] if path.is_file() else ''

    def up() -> None:
        assert robot.running, f'halo-ros up exited:\n{log(tmp_path / "up.log")}'
        assert recorder.running, f'the recorder exited:\n{log(tmp_path / "recorder.log")}'

    followed: set[int] = set()  # the chunks the controller executed in POLICY

    def following(n: int):
        def enough() -> bool:
            up()
            state = observer.last
            if state.get('mode') == 'POLICY' and state.get('chunk') is not None:
                followed.add(state['chunk']['seq'])
            return len(followed) >= n

        return enough

    rclpy.init()
    observer = Observer()
    try:
        sim = NodeProcess(
            'halo_ros.nodes.sim_node',
            {'camera_width': 160, 'camera_height': 120, 'camera_rate_hz': 10.0},
            log_path=str(tmp_path / 'sim_node.log'),
        ).start()
        robot = ManagedProcess(argv, env=venv['env'], log_path=str(tmp_path / 'up.log')).start()
        recorder = RobotNode(
            venv['python'],
            venv['env'],
            'halo_ros.nodes.recorder_node',
            {'output_dir': str(episodes), 'auto_start': True, 'flush_period_s': 0.2},
            tmp_path / 'recorder.log',
        ).start()
        spin_until(observer, following(2), 180, 'the controller following two served chunks')
        stopped = observer.call('/recorder_node/stop')
        assert stopped.success, stopped.message
    finally:
        observer.destroy_node()
        rclpy.try_shutdown()
        recorder_rc = recorder.stop() if recorder else None
        robot_rc = robot.stop(timeout_s=30) if robot else None
        sim_rc = sim.stop() if sim else None
        kill(server)
    assert recorder_rc == 0, log(tmp_path / 'recorder.log')
    assert robot_rc == 0, log(tmp_path / 'up.log')
    assert sim_rc == 0
    policy_log = log(up_dir / 'policy.log')
    assert 'remote:torch' in policy_log and 'seam rtc' in policy_log, policy_log
    assert 'engine.act failed' not in policy_log, policy_log

    (bag,) = [p for p in episodes.iterdir() if p.is_dir()]
    assert read_sidecar(bag).status is EpisodeStatus.COMPLETE
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    topics: dict[str, list] = {}
    with open(mcap_file(bag), 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages():
            topics.setdefault(channel.topic, []).append(decoded)
    chunks = topics['/halo/action_chunk']
    assert len(chunks[0].points) == 50
    seqs = [ChunkTag.parse(c.header.frame_id).seq for c in chunks]
    # Every chunk the controller followed once the recorder had subscribed is in the bag.
    assert seqs == sorted(seqs) and {q for q in followed if q >= seqs[0]} <= set(seqs), seqs
    for topic in ('/follower_left/joint_states', '/cam_high/image_raw', '/halo/command'):
        assert topics.get(topic), sorted(topics)
