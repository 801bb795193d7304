"""Calibration tools: arm offsets and gripper ranges, camera intrinsics."""
