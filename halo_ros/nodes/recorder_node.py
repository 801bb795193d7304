"""recorder_node: records rollouts as one rosbag2 (MCAP) bag per episode.

Subscriptions are raw (CDR bytes straight into the episode writer's queue; nothing is
deserialised on the hot path except the rare instruction/reward/success messages that also feed
the episode metadata). A topic is subscribed once a publisher appears, with its type from the
graph (the known list picks among several) and a QoS compatible with what the publishers offer.

Services: ~/start, ~/stop, ~/discard (std_srvs/Trigger), ~/mark_success (std_srvs/SetBool:
true = success, false = failure; applies to the open episode, else to the last closed one).
Parameters: output_dir, topics, extra_topics, compression (none|zstd), flush_period_s,
queue_max_mb, robot, calibration_hash, model_hash, instruction, operator_note, episode_prefix,
auto_start. Diagnostics (1 Hz) report the episode, messages written and drops by topic+reason.
"""

import importlib
import logging
import sys
from pathlib import Path

import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import SetBool, Trigger

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import Outcome
from halo_ros.recording.episode_writer import Compression, WriterConfig
from halo_ros.recording.recorder import EpisodeRecorder, RecorderConfig
from halo_ros.recording.topics import OfferedQos

logger = logging.getLogger(__name__)


def _message_class(msgtype: str):
    module, name = T.ros_type_name(msgtype)
    return getattr(importlib.import_module(module), name)


def _qos_for(publishers) -> QoSProfile:
    """Reliable only if every publisher is; transient-local only if every publisher is."""
    reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
    latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,  # absorbs executor hiccups; the writer queue absorbs disk hiccups
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def _offered(publisher) -> OfferedQos:
    qos = publisher.qos_profile
    return OfferedQos(
        reliable=qos.reliability == ReliabilityPolicy.RELIABLE,
        transient_local=qos.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        depth=int(qos.depth),
    )


class RecorderNode(Node):
    def __init__(self):
        super().__init__('recorder_node')
        p = self.declare_parameter
        output_dir = p('output_dir', 'episodes').value
        topic_names = list(p('topics', [t.name for t in T.DEFAULT_TOPICS]).value)
        topic_names += [t for t in p('extra_topics', Parameter.Type.STRING_ARRAY).value or []]
        compression = Compression(p('compression', 'none').value)
        writer = WriterConfig(
            flush_period_s=float(p('flush_period_s', 0.5).value),
            queue_max_bytes=int(p('queue_max_mb', 384).value) * 2**20,
            compression=compression,
        )
        self.recorder = EpisodeRecorder(
            RecorderConfig(
                output_dir=Path(output_dir).expanduser(),
                episode_prefix=p('episode_prefix', 'episode').value,
                robot=p('robot', '').value,
                calibration_hash=p('calibration_hash', '').value,
                model_hash=p('model_hash', '').value,
                writer=writer,
                meta_topic=self.resolve_topic_name(T.EPISODE_META_TOPIC),
            )
        )
        self.recorder.set_instruction(p('instruction', '').value)
        self.recorder.set_operator_note(p('operator_note', '').value)
        self.add_on_set_parameters_callback(self._on_parameters)

        # resolved name -> relative name as configured (for the known-type lookup)
        self._wanted = {self.resolve_topic_name(n): n for n in dict.fromkeys(topic_names)}
        self._recorded_subs: dict[str, object] = {}
        self._special = {
            self.resolve_topic_name(T.INSTRUCTION_TOPIC): (String, self._on_instruction),
            self.resolve_topic_name(T.REWARD_TOPIC): (Float32, self._on_reward),
            self.resolve_topic_name(T.SUCCESS_TOPIC): (Bool, self._on_success),
        }
        self._operator_marked = False

        self.create_service(Trigger, '~/start', self._srv_start)
        self.create_service(Trigger, '~/stop', self._srv_stop)
        self.create_service(Trigger, '~/discard', self._srv_discard)
        self.create_service(SetBool, '~/mark_success', self._srv_mark)
        self._diag_pub = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self.create_timer(0.2, self._discover)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.2, self._check_writer)
        self._discover()
        if p('auto_start', False).value:
            self._start()

    # ---- subscriptions -----------------------------------------------------------------------

    def _discover(self) -> None:
        for name, relative in self._wanted.items():
            if name in self._recorded_subs:
                continue
            publishers = self.get_publishers_info_by_topic(name)
            if not publishers:
                continue
            types = {pub.topic_type for pub in publishers}
            known = T.KNOWN_TYPES.get(relative) or T.KNOWN_TYPES.get(relative.lstrip('/'))
            msgtype = known if known in types else sorted(types)[0]
            if len(types) > 1:
                self.get_logger().warning(
                    f'{name}: publishers disagree on the type {sorted(types)}; recording {msgtype}'
                )
            try:
                cls = _message_class(T.bag_type_name(msgtype))
            except (ImportError, AttributeError, ValueError) as err:
                self.get_logger().error(f'{name}: cannot import type {msgtype}: {err}')
                self._recorded_subs[name] = None
                continue
            special = self._special.get(name)

            def callback(data, name=name, msgtype=msgtype, special=special):
                self.recorder.on_message(name, msgtype, self.get_clock().now().nanoseconds, data)
                if special is not None:
                    special[1](deserialize_message(data, special[0]))

            self.recorder.set_offered_qos(name, tuple(_offered(pub) for pub in publishers))
            self._recorded_subs[name] = self.create_subscription(
                cls, name, callback, _qos_for(publishers), raw=True
            )
            self.get_logger().info(f'recording {name} [{msgtype}]')

    # ---- metadata inputs --------------------------------------------------------------------

    def _on_instruction(self, msg) -> None:
        self.recorder.set_instruction(msg.data)

    def _on_reward(self, msg) -> None:
        self.recorder.set_reward(float(msg.data))

    def _on_success(self, msg) -> None:
        if msg.data and self.recorder.recording and not self._operator_marked:
            self.recorder.mark_outcome(Outcome.SUCCESS)

    def _on_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'instruction':
                self.recorder.set_instruction(param.value)
            elif param.name == 'operator_note':
                self.recorder.set_operator_note(param.value)
        return SetParametersResult(successful=True)

    # ---- services ------------------------------------------------------------------------------

    def _start(self) -> str:
        self._operator_marked = False
        bag = self.recorder.start()
        return f'recording {bag}'

    def _srv_start(self, request, response):
        return self._answer(response, self._start)

    def _srv_stop(self, request, response):
        def stop():
            summary = self.recorder.stop()
            return (
                f'{summary.bag_dir}: {summary.written_messages} messages, '
                f'{summary.dropped_messages} dropped, status {summary.meta.status.value}'
            )

        return self._answer(response, stop)

    def _srv_discard(self, request, response):
        return self._answer(response, lambda: f'discarded {self.recorder.discard()}')

    def _srv_mark(self, request, response):
        outcome = Outcome.SUCCESS if request.data else Outcome.FAILURE

        def mark():
            self._operator_marked = True
            return f'{self.recorder.mark_outcome(outcome)}: {outcome.value}'

        return self._answer(response, mark)

    def _answer(self, response, action):
        try:
            response.message = action()
            response.success = True
        except (RuntimeError, OSError, ValueError) as err:
            response.success, response.message = False, str(err)
            self.get_logger().error(response.message)
        return response

    # ---- health ----------------------------------------------------------------------------------

    def _check_writer(self) -> None:
        summary = self.recorder.poll_failure()
        if summary is not None:
            self.get_logger().error(
                f'episode {summary.meta.episode_id} stopped: {summary.meta.error}; '
                f'{summary.written_messages} messages kept in {summary.bag_dir}'
            )

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name='recorder_node: recording', hardware_id='recorder')
        writer = self.recorder.writer
        values = [
            KeyValue(
                key='subscribed',
                value=str(sum(1 for s in self._recorded_subs.values() if s is not None)),
            )
        ]
        last = self.recorder.last_summary
        if writer is not None:
            drops = writer.drops.as_strings()
            written = writer.written_counts()
            status.level = DiagnosticStatus.WARN if drops else DiagnosticStatus.OK
            status.message = f'recording {writer.meta.episode_id}'
            values += [
                KeyValue(key='episode', value=writer.meta.episode_id),
                KeyValue(key='written', value=str(sum(written.values()))),
                KeyValue(key='dropped', value=str(sum(drops.values()))),
            ]
            values += [KeyValue(key=f'written/{k}', value=str(v)) for k, v in written.items()]
            values += [KeyValue(key=f'drops/{k}', value=str(v)) for k, v in drops.items()]
        elif last is not None and last.meta.error:
            status.level = DiagnosticStatus.ERROR
            status.message = f'last episode {last.meta.episode_id} failed: {last.meta.error}'
        else:
            status.level = DiagnosticStatus.OK
            status.message = 'idle'
        status.values = values
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def shutdown(self) -> None:
        if self.recorder.recording:
            summary = self.recorder.stop()
            # Python logging: after SIGINT the rclpy context (and /rosout) may be gone already.
            logger.info('closed %s on shutdown', summary.bag_dir)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname).1s %(name)s: %(message)s')
    rclpy.init(args=sys.argv if argv is None else argv)
    node = RecorderNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
