"""The embedded MuJoCo ALOHA: physics, cameras, scripted expert, virtual Dynamixel buses."""

import os

# Headless rendering unless the user chose a GL backend; MuJoCo reads this when it is imported,
# and every halo_ros module that imports mujoco lives in this package.
os.environ.setdefault('MUJOCO_GL', 'egl')
