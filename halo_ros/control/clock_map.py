"""Stamps (ROS time) on the control clock: mapped once, clock steps detected and counted.

The loop times everything it decides -- ramp weights, the watchdog, chunk age and alignment,
timeouts -- on its control clock: the monotonic clock on a robot, the simulated clock with sim
time. Stamps come on ROS time, which on a robot is the wall clock, and chrony may step it
(backwards too). Every tick measures the offset between the two clocks; a chunk's stamp is mapped
onto the control clock once, when the loop takes it, and never compared on ROS time again. An
offset that moves by more than the tolerance is a step: counted, and the new offset holds from
then on. The chunk in use plays on at its mapped times; a chunk stamped before the step but taken
after it looks that much older or newer and is judged by age like any other.
"""


class StampMap:
    def __init__(self, step_tolerance_ns: int):
        if step_tolerance_ns <= 0:
            raise ValueError(f'step_tolerance_ns must be > 0, got {step_tolerance_ns}')
        self._tolerance_ns = step_tolerance_ns
        self.offset_ns: int | None = None  # stamp clock minus control clock
        self.steps = 0

    def update(self, control_ns: int, stamp_ns: int) -> int:
        """The offset at this tick; returns the step in ns when it jumped (else 0)."""
        offset = stamp_ns - control_ns
        previous, self.offset_ns = self.offset_ns, offset
        if previous is None or abs(offset - previous) <= self._tolerance_ns:
            return 0
        self.steps += 1
        return offset - previous

    def to_control(self, stamp_ns: int) -> int:
        return stamp_ns - (self.offset_ns or 0)

    def to_stamp(self, control_ns: int) -> int:
        return control_ns + (self.offset_ns or 0)
