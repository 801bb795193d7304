"""The robot computer without a GPU, installed for real: a venv with only `halo_ros[robot]`
(tests/robot_venv.py builds it from the package, cached by setup.py) has no torch and no
onnxruntime, and its controller, policy node (backend remote, rtc seams) and recorder run the
graph against the simulator and `halo-ros serve`, both from the full venv, on loopback: the
controller follows the served chunks and the recorder closes a bag holding them."""

import json
import subprocess

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
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.supervisor import NodeProcess

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
    server = serve(endpoint, tmp_path / 'serve.log')  # the GPU box (the full venv)
    sim = NodeProcess(
        'halo_ros.nodes.sim_node',
        {'camera_width': 160, 'camera_height': 120, 'camera_rate_hz': 10.0},
        log_path=str(tmp_path / 'sim_node.log'),
    ).start()
    # The simulator's buses answer late in bursts on a loaded 2-core machine (test_control_ros).
    config = yaml.safe_load(config_file('controller.yaml').read_text())
    config['max_consecutive_read_failures'] = 25
    (tmp_path / 'controller.yaml').write_text(yaml.safe_dump(config))
    episodes = tmp_path / 'episodes'
    robot = {
        'controller': ('halo_ros.nodes.controller_node', {
            'config': str(tmp_path / 'controller.yaml'), 'calibration': 'sim_aloha.yaml',
        }),
        'policy': ('halo_ros.nodes.policy_node', {
            'backend': 'remote', 'server': endpoint, 'remote_timeout_s': 10.0,
            'image_width': 160, 'image_height': 120, 'chunk_rate_hz': 4.0, 'seam_mode': 'rtc',
            'reasoning': False,
        }),
        'recorder': ('halo_ros.nodes.recorder_node',
                     {'output_dir': str(episodes), 'auto_start': True, 'flush_period_s': 0.2}),
    }  # fmt: skip
    nodes = {
        key: RobotNode(venv['python'], venv['env'], module, params, tmp_path / f'{key}.log').start()
        for key, (module, params) in robot.items()
    }

    def logs(key: str) -> str:
        return (tmp_path / f'{key}.log').read_text(errors='replace')[-3000:]

    def up() -> None:
        for key, node in nodes.items():
            assert node.running, f'{key} exited:\n{logs(key)}'

    rclpy.init()
    observer = Observer()
    try:
        spin_until(observer, lambda: up() or len(observer.states) > 10, 120, 'controller ticks')
        engaged = observer.call('/controller/engage_policy')
        assert engaged.success, engaged.message

        def following() -> bool:
            up()
            return observer.last.get('mode') == 'POLICY' and observer.last.get('chunk') is not None

        spin_until(observer, following, 120, 'the controller following served chunks')
        first_seq = observer.last['chunk']['seq']
        spin_until(
            observer,
            lambda: up() or (observer.last.get('chunk') or {}).get('seq', -1) >= first_seq + 2,
            60,
            'two more chunks',
        )
        assert observer.call('/controller/hold').success
        stopped = observer.call('/recorder_node/stop')
        assert stopped.success, stopped.message
    finally:
        observer.destroy_node()
        rclpy.try_shutdown()
        codes = {key: nodes[key].stop() for key in ('recorder', 'policy', 'controller')}
        sim_rc = sim.stop()
        kill(server)
    for key, rc in codes.items():
        assert rc == 0, f'{key} exited {rc}:\n{logs(key)}'
    assert sim_rc == 0
    policy_log = logs('policy')
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
    assert len(chunks) >= 3 and len(chunks[0].points) == 50
    tags = [ChunkTag.parse(c.header.frame_id) for c in chunks]
    assert [t.seq for t in tags] == sorted(t.seq for t in tags)
    for topic in ('/follower_left/joint_states', '/cam_high/image_raw', '/halo/command'):
        assert topics.get(topic), sorted(topics)
