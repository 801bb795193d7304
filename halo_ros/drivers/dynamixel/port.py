"""A dynamixel-sdk PortHandler that waits for replies in select() instead of spinning.

The stock PortHandler opens pyserial with timeout=0 and the SDK's rxPacket loop calls readPort()
until the packet completes or times out, so every wait for a status packet burns a full core
(measured: ~95 % of a core while looping, feasibility.md §4). Here readPort() first blocks in
select() on the port until bytes arrive or the packet deadline passes, which turns that spin into
a sleep. Two more fixes to the SDK's timing:

- the reply timeout margin uses the adapter's actual latency timer (udev sets 1 ms on ALOHA
  machines) instead of the hard-coded LATENCY_TIMER = 16 ms, so a lost reply costs a few ms,
  not 34 ms;
- deadlines use the monotonic clock instead of time.time().
"""

import select
import time

from dynamixel_sdk import PortHandler

_MAX_WAIT_S = 0.05  # never sleep longer than this in one select, whatever the deadline says


class QuietPortHandler(PortHandler):
    def __init__(self, port_name: str, *, latency_timer_ms: float) -> None:
        super().__init__(port_name)
        self.latency_timer_ms = float(latency_timer_ms)

    def setPacketTimeout(self, packet_length):  # noqa: N802 (SDK override)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = (
            self.tx_time_per_byte * packet_length + 2.0 * self.latency_timer_ms + 2.0
        )

    def getCurrentTime(self):  # noqa: N802 (SDK override)
        return time.monotonic_ns() / 1e6  # ms

    def readPort(self, length):  # noqa: N802 (SDK override)
        remaining_ms = self.packet_timeout - (self.getCurrentTime() - self.packet_start_time)
        if remaining_ms > 0:
            # Returns as soon as any byte is readable; the SDK asks again for the rest.
            select.select([self.ser.fileno()], [], [], min(remaining_ms / 1e3, _MAX_WAIT_S))
        return self.ser.read(length)
