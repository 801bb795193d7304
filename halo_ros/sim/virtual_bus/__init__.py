"""Virtual Dynamixel Protocol 2.0 buses on pseudo-terminals, one per simulated ALOHA arm."""

from halo_ros.sim.virtual_bus.bus import FaultInjection, VirtualBus, start_virtual_buses
from halo_ros.sim.virtual_bus.kinematic_arm import KinematicArm

__all__ = ['FaultInjection', 'KinematicArm', 'VirtualBus', 'start_virtual_buses']
