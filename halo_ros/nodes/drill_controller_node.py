"""controller_node whose ROS clock can be stepped, for fault drills (`halo-ros soak-controller`).

Everything is the controller node's, except that the clock its stamps come from is the node's
ROS time plus `clock_offset_s`, a parameter that can be set at run time
(`ros2 param set /controller clock_offset_s -2.0`): what a chrony step of the wall clock does to
the controller on a robot whose policy runs on another host's clock. Never for a robot.
"""

from rcl_interfaces.msg import SetParametersResult

from halo_ros.nodes.controller_node import ControllerNode
from halo_ros.nodes.spin import run_node


class DrillControllerNode(ControllerNode):
    def __init__(self):
        super().__init__()
        self._offset_ns = 0
        self.declare_parameter('clock_offset_s', 0.0)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.loop.clock_ns = lambda: self.get_clock().now().nanoseconds + self._offset_ns

    def _on_parameters(self, parameters):
        for parameter in parameters:
            if parameter.name == 'clock_offset_s':
                self._offset_ns = int(float(parameter.value) * 1e9)
                self.get_logger().warning(f'drill: clock offset now {parameter.value:+.3f} s')
        return SetParametersResult(successful=True)


def main(args=None):
    run_node(DrillControllerNode, args, threads=2)


if __name__ == '__main__':
    main()
