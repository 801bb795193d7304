"""Dynamixel Protocol 2.0 through dynamixel-sdk: control tables, framing, one bus per adapter.

`tables` and `protocol` are plain Python (the virtual bus uses them without the SDK); the bus
classes import dynamixel-sdk, so they are loaded on first use.
"""

from halo_ros.drivers.dynamixel.tables import HardwareError, OperatingMode, Register, ServoModel

_BUS_NAMES = (
    'DynamixelBus',
    'DynamixelCommError',
    'DynamixelPortError',
    'DynamixelStatusError',
    'StateReading',
)

__all__ = ['HardwareError', 'OperatingMode', 'Register', 'ServoModel', *_BUS_NAMES]


def __getattr__(name: str):
    if name in _BUS_NAMES:
        from halo_ros.drivers.dynamixel import bus

        return getattr(bus, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
