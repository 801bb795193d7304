"""Dynamixel Protocol 2.0 through dynamixel-sdk: control tables, framing, one bus per adapter."""

from halo_ros.drivers.dynamixel.bus import (
    DynamixelBus,
    DynamixelCommError,
    DynamixelStatusError,
    StateReading,
)
from halo_ros.drivers.dynamixel.tables import HardwareError, OperatingMode, Register, ServoModel

__all__ = [
    'DynamixelBus',
    'DynamixelCommError',
    'DynamixelStatusError',
    'HardwareError',
    'OperatingMode',
    'Register',
    'ServoModel',
    'StateReading',
]
