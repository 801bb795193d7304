"""The controller core, ROS-free: 50 Hz loop, modes, chunk alignment, safety filter.

- `chunks`: validated chunks and the buffer that plays them by the policy's alignment rule.
- `safety`: position / velocity / acceleration / gripper-current limits per 20 ms tick.
- `config`: ControllerConfig (config/controller.yaml); limits from the calibration file.
- `arms`: the RobotArms seam and its Dynamixel implementation (ArmSet).
- `modes`: HOLD / TELEOP / POLICY / ESTOP, phases, prepare (may refuse) / perform split, and
  `ModeState`, the one record of what the loop is in.
- `loop`: the control thread (read, choose, filter, write, publish), orchestrating
  `targets` (the target by mode: handover, ramp, watchdog, sleep), `switching` (performing
  switches) and `supervision` (read failures, hardware errors, following error, re-sync).
- `stats`: what diagnostics report; `bench`: `halo-ros bench-controller`.
"""
