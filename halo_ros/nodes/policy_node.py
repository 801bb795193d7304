"""policy_node: HALO on the ROS graph. Slow reasoning and fast action chunks from one engine.

Subscribes: `cam_high|cam_left_wrist|cam_right_wrist/image_raw` (rgb8, sensor-data QoS),
`follower_left/joint_states` + `follower_right/joint_states` (or one 14-joint topic named by the
`state_topic` parameter, e.g. `sim/joint_states` before a controller exists), `halo/instruction`.
Publishes: `halo/action_chunk` (JointTrajectory, the 14 joint names, header.stamp = observation
stamp, points at k * dt; epoch/seq/context version in header.frame_id, see
`halo_ros.runtime.chunk`), `halo/reasoning` (String JSON), `halo/subgoal/image_raw` (rgb8) and
`diagnostics` (1 Hz). Service `~/new_episode` (Trigger): forget the reasoning about the last
episode (a new epoch; its chunks and reasoning carry it). A trained checkpoint's `training.yaml`
names the cameras it sees, its longest thought and whether it was trained for the prefix seam.
Parameters and their defaults: `halo_ros.runtime.settings`. All the logic is in
`halo_ros.runtime`; this file only translates.
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

from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.nodes.conversions import image_array, image_msg, ns_from_stamp, stamp_from_ns
from halo_ros.nodes.spin import run_node
from halo_ros.runtime.observation import PolicyDropReason
from halo_ros.runtime.policy import PolicyRuntime
from halo_ros.runtime.reasoning_message import TOPIC as REASONING_TOPIC
from halo_ros.runtime.reasoning_message import ReasoningMessage
from halo_ros.runtime.settings import POLICY_DEFAULTS, load_policy_engine, policy_settings

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


class PolicyNode(Node):
    def __init__(self):
        super().__init__('policy')
        declared = self.declare_parameters('', list(POLICY_DEFAULTS.items()))
        settings = policy_settings({param.name: param.value for param in declared})
        v = settings.values
        cameras, config = settings.policy.assembly.cameras, settings.policy
        engine = load_policy_engine(settings)
        self._chunks = self.create_publisher(JointTrajectory, 'halo/action_chunk', 10)
        self._reasoning = self.create_publisher(String, REASONING_TOPIC, QoSProfile(depth=10))
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
        self.create_subscription(
            String, 'halo/mode', lambda msg: self.runtime.controller_mode(msg.data), 10
        )
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

    def _on_image(self, camera: str):
        def on_image(msg: Image) -> None:
            try:
                frame = image_array(msg)
            except ValueError as error:
                self.runtime.drops.add(PolicyDropReason.SHAPE, f'{camera}: {error}')
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
        message = ReasoningMessage.of(reasoning, accepted=accepted, epoch=epoch)
        self._reasoning.publish(String(data=message.to_json()))
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
