"""policy_node: HALO on the ROS graph. Slow reasoning and fast action chunks from one engine.

Subscribes: `cam_high|cam_left_wrist|cam_right_wrist/image_raw` (rgb8, sensor-data QoS),
`follower_left/joint_states` + `follower_right/joint_states` (or one 14-joint topic named by the
`state_topic` parameter, e.g. `sim/joint_states` before a controller exists), `halo/instruction`.
Publishes: `halo/action_chunk` (JointTrajectory, the 14 joint names, header.stamp = observation
stamp, points at k * dt; epoch/seq/context version in header.frame_id, see
`halo_ros.runtime.chunk`), `halo/reasoning` (String JSON), `halo/subgoal/image_raw` (rgb8) and
`diagnostics` (1 Hz). Service `~/new_episode` (Trigger): forget the reasoning about the last
episode (a new epoch; its chunks and reasoning carry it). A trained checkpoint's `training.yaml`
names the cameras it sees and its longest thought. All the logic is in `halo_ros.runtime`; this
file only translates.
"""

import json

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from halo_ros.engine.loading import (
    DEFAULT_CAMERAS,
    EngineConfig,
    checkpoint_card,
    load_engine,
    resolve_checkpoint,
)
from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.nodes.conversions import image_array, image_msg, ns_from_stamp, stamp_from_ns
from halo_ros.nodes.spin import run_node
from halo_ros.runtime.actor import ActorConfig
from halo_ros.runtime.observation import AssemblyConfig, DropReason
from halo_ros.runtime.policy import PolicyConfig, PolicyRuntime
from halo_ros.runtime.seam import SeamMode, WeightSchedule

FOLLOWER_STATE_TOPICS = ('follower_left/joint_states', 'follower_right/joint_states')


def chunk_msg(chunk) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(BIMANUAL_JOINTS))
    msg.header.stamp = stamp_from_ns(chunk.stamp_ns)
    msg.header.frame_id = chunk.tag.format()
    for k, action in enumerate(chunk.actions.tolist()):
        offset = k * chunk.dt_ns
        msg.points.append(
            JointTrajectoryPoint(
                positions=action,
                time_from_start=Duration(
                    sec=offset // 1_000_000_000, nanosec=offset % 1_000_000_000
                ),
            )
        )
    return msg


def reasoning_json(reasoning, accepted: bool, epoch: int) -> str:
    return json.dumps(
        {
            'plan': reasoning.plan,
            'subtask': reasoning.subtask,
            'movement': reasoning.movement,
            'text': reasoning.text,
            'instruction': reasoning.instruction,
            'context_version': reasoning.version,
            'epoch': epoch,
            'accepted': accepted,  # False: the instruction changed while it ran (not used)
            'observation_stamp_ns': reasoning.observation_stamp_ns,
            'latency_ms': round(reasoning.timings_ms.get('total', 0.0), 1),
            'timings_ms': {k: round(v, 1) for k, v in reasoning.timings_ms.items()},
        }
    )


class PolicyNode(Node):
    def __init__(self):
        super().__init__('policy')
        p = self.declare_parameters(
            '',
            [
                ('model', 'halo-tiny'),  # preset under models/ or a YAML path
                # A folder with ema.safetensors, or its name under models/; '' = random weights.
                ('checkpoint', ''),
                ('backend', 'torch'),  # torch | onnxruntime | tensorrt | remote
                ('server', 'tcp://127.0.0.1:5555'),  # backend remote: the `halo-ros serve` endpoint
                ('server_key', ''),  # remote over CURVE: the server's .key file
                ('client_key', ''),  # remote over CURVE: this robot's .key_secret file
                ('jpeg_quality', 0),  # remote: 0 = raw frames, 1..100 = JPEG
                ('remote_timeout_s', 1.0),  # remote: a chunk later than this is dropped
                ('model_hash', ''),  # remote: refuse a server with another model ('' = any)
                ('device', 'cpu'),
                ('seed', 0),
                ('threads', 0),  # torch and onnxruntime intra-op threads; 0: their default
                ('image_width', 320),  # what the cameras deliver
                ('image_height', 240),
                ('chunk_length', 50),
                ('flow_steps', 9),
                ('control_rate_hz', 50.0),  # the controller's rate: chunk points are 1/rate apart
                ('chunk_rate_hz', 10.0),  # at most this many chunks per second
                ('seam_mode', 'rtc'),  # rtc | hard | none
                ('max_guidance', 10.0),
                ('rtc_schedule', 'linear'),  # linear | exp: RTC's soft weights after the delay
                ('reasoning', True),
                ('reasoning_period_s', 1.0),
                ('subgoal', True),
                ('max_tokens', 0),  # 0: the checkpoint's longest thought + 16, else 64
                ('cameras', ''),  # comma-separated; '': the checkpoint's, else all three
                ('instruction', ''),
                ('max_skew_ms', 50.0),
                ('max_age_ms', 250.0),
                ('state_topic', ''),  # '' = the two follower topics; else one 14-joint topic
                ('diagnostics_rate_hz', 1.0),
            ],
        )
        v = {param.name: param.value for param in p}
        if v['threads'] > 0:
            import torch

            torch.set_num_threads(v['threads'])
        image_hw = (v['image_height'], v['image_width'])
        v['checkpoint'] = resolve_checkpoint(v['checkpoint'])
        card = checkpoint_card(v['checkpoint'])  # how the checkpoint was trained to run
        cameras = tuple(c.strip() for c in v['cameras'].split(',') if c.strip())
        cameras = cameras or tuple(card.get('cameras', DEFAULT_CAMERAS))
        max_tokens = v['max_tokens'] or (card['max_thought_tokens'] + 16 if card else 64)
        engine_config = EngineConfig(
            model=v['model'],
            checkpoint=v['checkpoint'] or None,
            backend=v['backend'],
            device=v['device'],
            cameras=cameras,
            image_hw=image_hw,
            chunk_length=v['chunk_length'],
            flow_steps=v['flow_steps'],
            seed=v['seed'],
            server=v['server'],
            threads=v['threads'],
        )
        if v['backend'] == 'remote':
            engine = self._remote_engine(engine_config, v)
        else:
            engine = load_engine(engine_config)
        config = PolicyConfig(
            assembly=AssemblyConfig(
                cameras=cameras,
                image_hw=image_hw,
                max_skew_ms=v['max_skew_ms'],
                max_age_ms=v['max_age_ms'],
            ),
            actor=ActorConfig(
                chunk_period_s=1.0 / v['chunk_rate_hz'],
                control_dt_s=1.0 / v['control_rate_hz'],
                seam=SeamMode(v['seam_mode']),
                max_guidance=v['max_guidance'],
                weight_schedule=WeightSchedule(v['rtc_schedule']),
                seed=v['seed'],
            ),
            reasoning=v['reasoning'],
            reasoning_period_s=v['reasoning_period_s'],
            subgoal=v['subgoal'],
            max_tokens=max_tokens,
            instruction=v['instruction'],
        )
        self._chunks = self.create_publisher(JointTrajectory, 'halo/action_chunk', 10)
        self._reasoning = self.create_publisher(String, 'halo/reasoning', QoSProfile(depth=10))
        self._subgoal = self.create_publisher(Image, 'halo/subgoal/image_raw', 2)
        self._diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self.runtime = PolicyRuntime(
            engine,
            config,
            clock_ns=lambda: self.get_clock().now().nanoseconds,
            on_chunk=lambda chunk: self._chunks.publish(chunk_msg(chunk)),
            on_reasoning=self._publish_reasoning,
        )
        for camera in cameras:
            self.create_subscription(
                Image, f'{camera}/image_raw', self._on_image(camera), qos_profile_sensor_data
            )
        state_topics = (v['state_topic'],) if v['state_topic'] else FOLLOWER_STATE_TOPICS
        for topic in state_topics:
            self.create_subscription(JointState, topic, self._on_joints, 10)
        self.create_subscription(String, 'halo/instruction', self._on_instruction, 10)
        self.create_service(Trigger, '~/new_episode', self._on_new_episode)
        self.create_timer(1.0 / v['diagnostics_rate_hz'], self._publish_diagnostics)
        self.runtime.start()
        info = engine.info
        weights = v['checkpoint'] or 'RANDOM weights (actions are meaningless)'
        if v['backend'] == 'remote':
            weights = f'served by {v["server"]} (model hash {info.model_hash})'
        reasoning = f'every {v["reasoning_period_s"]:g} s' if v['reasoning'] else 'off'
        self.get_logger().info(
            f'{info.model_name} on {info.backend}/{v["device"]}, {weights}: chunks of '
            f'{info.chunk_length} at {v["control_rate_hz"]:g} Hz, up to {v["chunk_rate_hz"]:g} '
            f'chunks/s, seam {v["seam_mode"]}, reasoning {reasoning}, state from '
            f'{list(state_topics)}'
        )

    @staticmethod
    def _remote_engine(engine_config: EngineConfig, v: dict):
        from halo_ros.transport.client import RemoteConfig, remote_engine
        from halo_ros.transport.security import ClientKeys

        if bool(v['server_key']) != bool(v['client_key']):
            raise ValueError('server_key and client_key go together (CURVE needs both)')
        keys = ClientKeys(v['client_key'], v['server_key']) if v['server_key'] else None
        return remote_engine(
            engine_config,
            RemoteConfig(
                act_timeout_s=v['remote_timeout_s'],
                connect_timeout_s=30.0,
                jpeg_quality=v['jpeg_quality'],
                keys=keys,
                model_hash=v['model_hash'],
                control_period_s=1.0 / v['control_rate_hz'],
            ),
        )

    def _on_image(self, camera: str):
        def on_image(msg: Image) -> None:
            try:
                frame = image_array(msg)
            except ValueError as error:
                self.runtime.drops.add(DropReason.SHAPE, f'{camera}: {error}')
                return
            self.runtime.assembler.add_image(camera, frame, ns_from_stamp(msg.header.stamp))

        return on_image

    def _on_joints(self, msg: JointState) -> None:
        self.runtime.assembler.add_joints(msg.name, msg.position, ns_from_stamp(msg.header.stamp))

    def _on_instruction(self, msg: String) -> None:
        self.runtime.set_instruction(msg.data)

    def _on_new_episode(self, request, response):
        epoch = self.runtime.new_episode()
        response.success, response.message = True, f'epoch {epoch}'
        return response

    def _publish_reasoning(self, reasoning, accepted: bool) -> None:
        epoch = self.runtime.context.snapshot().epoch
        self._reasoning.publish(String(data=reasoning_json(reasoning, accepted, epoch)))
        if accepted and reasoning.subgoal_image is not None:
            frame = reasoning.subgoal_image
            self._subgoal.publish(image_msg(frame, reasoning.observation_stamp_ns, 'subgoal'))

    def _publish_diagnostics(self) -> None:
        d = self.runtime.diagnostics()
        values = {
            'chunk_rate_hz': d['chunk_rate_hz'],
            'chunks': d['chunks'],
            'reasoning_cycles': d['reasoning_cycles'],
            'reasoning_age_s': d['reasoning_age_s'],
            'epoch': d['epoch'],
            'context_version': d['context_version'],
            'delay_steps': d['delay_steps'],
        }
        for stage, percentiles in d['latency_ms'].items():
            for name, ms in percentiles.items():
                values[f'latency_{stage}_{name}_ms'] = ms
        for reason, count in d['drops'].items():
            values[f'drops_{reason}'] = count
        ok = d['chunk_rate_hz'] > 0
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
            name='halo_ros: policy',
            message='producing chunks' if ok else 'no chunks (waiting for cameras and joints?)',
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=json.dumps(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    def destroy_node(self):
        # Bounded: a supervisor escalates to SIGTERM after 10 s, and a CPU reasoning cycle under
        # load can take longer. An engine still in use by a (daemon) worker is left to exit.
        if self.runtime.stop(timeout_s=4.0):
            self.runtime.engine.close()
        super().destroy_node()


def main(args=None):
    run_node(PolicyNode, args)


if __name__ == '__main__':
    main()
