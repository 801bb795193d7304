"""Calibrate the arms (joint offsets, gripper range) or a camera (checkerboard intrinsics)."""
