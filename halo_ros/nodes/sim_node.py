"""sim_node: the embedded MuJoCo ALOHA as a ROS 2 node.

Publishes the three cameras (Image rgb8 + CameraInfo), the task reward and success, an episode
status, and the physics ground truth of the follower joints (`sim/joint_states`, for evaluation:
the control stack reads the arms through their servos). Service `~/reset` (Trigger) starts the next
seeded episode.

With `sim_time` it is the graph's clock: it publishes `/clock` every physics tick and stamps
everything on simulated time, and `real_time_factor` r < 1 slows the world down (nodes started
with use_sim_time then run at its pace). The node itself keeps the wall clock: it makes time.
"""

import json

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import Trigger

from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.nodes.conversions import (
    camera_info_msg,
    image_msg,
    joint_state_msg,
    stamp_from_ns,
)
from halo_ros.nodes.spin import run_node
from halo_ros.sim.runner import Operator, SimConfig, SimRunner, ground_truth_joints
from halo_ros.sim.scene import Task


class SimNode(Node):
    def __init__(self):
        super().__init__('sim')
        p = self.declare_parameters(
            '',
            [
                ('task', 'transfer_cube'),
                ('camera_width', 320),
                ('camera_height', 240),
                ('camera_rate_hz', 15.0),
                ('seed', 0),
                ('operator', 'none'),  # none | leaders (scripted teleoperator) | followers (direct)
                ('virtual_buses', True),  # arms reachable only as Dynamixel buses on ptys
                ('calibration', 'sim_aloha.yaml'),
                ('status_rate_hz', 10.0),
                ('sim_time', False),  # publish /clock and stamp on simulated time
                ('real_time_factor', 1.0),  # simulated seconds per wall second (needs sim_time)
                ('bus_reply_priority', 0),  # SCHED_FIFO of the virtual buses (a USB adaptor's)
                ('bus_corrupt_probability', 0.0),  # fault drills: replies with a broken CRC
                ('unplugged_buses', ['']),  # fault drills, settable at run time: arms unplugged
            ],
        )
        v = {param.name: param.value for param in p}
        config = SimConfig(
            task=Task(v['task']),
            width=v['camera_width'],
            height=v['camera_height'],
            camera_rate_hz=v['camera_rate_hz'],
            seed=v['seed'],
            operator=Operator(v['operator']),
            virtual_buses=v['virtual_buses'],
            calibration=v['calibration'],
            real_time_factor=v['real_time_factor'],
            sim_time=v['sim_time'],
            bus_reply_priority=v['bus_reply_priority'],
            bus_corrupt_probability=v['bus_corrupt_probability'],
        )
        self._clock_publisher = (
            self.create_publisher(Clock, '/clock', QoSProfile(depth=10))
            if config.sim_time
            else None
        )
        self._images = {
            c: self.create_publisher(Image, f'{c}/image_raw', qos_profile_sensor_data)
            for c in config.cameras
        }
        self._infos = {
            c: self.create_publisher(CameraInfo, f'{c}/camera_info', qos_profile_sensor_data)
            for c in config.cameras
        }
        self._joints = self.create_publisher(JointState, 'sim/joint_states', 10)
        self._reward = self.create_publisher(Float32, 'sim/reward', 10)
        self._success = self.create_publisher(Bool, 'sim/success', 10)
        self._status = self.create_publisher(String, 'sim/status', 10)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(1.0 / v['status_rate_hz'], self._publish_status)
        self.runner = SimRunner(
            config, on_frames=self._publish_frames, on_tick=self._publish_joints
        )
        self.runner.start()
        self.add_on_set_parameters_callback(self._on_parameters)
        self.get_logger().info(
            f'simulating {config.task.value} with cameras {list(config.cameras)} at '
            f'{config.width}x{config.height} {config.camera_rate_hz:g} Hz, operator '
            f'{config.operator.value}'
            + (f', sim time at {config.real_time_factor:g}x real time' if config.sim_time else '')
        )

    def _publish_frames(self, frames, stamp_ns: int) -> None:
        for name, frame in frames.items():
            frame_id = f'{name}_optical_frame'
            self._images[name].publish(image_msg(frame, stamp_ns, frame_id))
            k = self.runner.intrinsics[name]
            self._infos[name].publish(camera_info_msg(k.width, k.height, k.k, stamp_ns, frame_id))

    def _publish_joints(self, sim, tick: int) -> None:
        stamp_ns = self.runner.clock_ns()
        if self._clock_publisher is not None:
            self._clock_publisher.publish(Clock(clock=stamp_from_ns(stamp_ns)))
        position, velocity = ground_truth_joints(sim)
        self._joints.publish(
            joint_state_msg(BIMANUAL_JOINTS, position, velocity, stamp_ns=stamp_ns)
        )

    def _publish_status(self) -> None:
        status = self.runner.status()
        self._reward.publish(Float32(data=float(status.reward)))
        self._success.publish(Bool(data=status.success))
        self._status.publish(String(data=json.dumps(status.__dict__)))

    def _on_reset(self, request, response):
        seed = self.runner.reset()
        response.success, response.message = True, f'episode reset with seed {seed}'
        return response

    def _on_parameters(self, parameters):
        for parameter in parameters:
            if parameter.name == 'unplugged_buses':
                try:
                    self.runner.set_unplugged([n for n in parameter.value if n])
                except ValueError as error:  # not an arm name
                    return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def destroy_node(self):
        self.runner.stop()
        super().destroy_node()


def main(args=None):
    run_node(SimNode, args)


if __name__ == '__main__':
    main()
