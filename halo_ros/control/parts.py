"""What the control loop's collaborators share, built once by the loop.

`Targets`, `ModeSwitch` and `Supervisor` each own their own state; these parts they use together:
the hardware seam, the configuration, the mode record, both safety filters, the chunk buffer, the
counters and the last fresh poses.
"""

from dataclasses import dataclass

from halo_ros.control.arms import Poses, RobotArms
from halo_ros.control.chunks import ChunkBuffer
from halo_ros.control.config import ControllerConfig
from halo_ros.control.modes import ModeState
from halo_ros.control.safety import SafetyFilter
from halo_ros.control.stats import ControlStats


@dataclass(frozen=True)
class LoopParts:
    """Built once by the loop; a collaborator reads them as its own attributes (`LoopPart`)."""

    arms: RobotArms
    config: ControllerConfig
    state: ModeState
    follower_filter: SafetyFilter
    leader_filter: SafetyFilter
    buffer: ChunkBuffer
    stats: ControlStats
    poses: Poses


class LoopPart:
    """Base of the loop's collaborators: the shared parts, read-only, as attributes."""

    def __init__(self, parts: LoopParts):
        self.parts = parts

    arms = property(lambda self: self.parts.arms)
    config = property(lambda self: self.parts.config)
    state = property(lambda self: self.parts.state)
    follower_filter = property(lambda self: self.parts.follower_filter)
    leader_filter = property(lambda self: self.parts.leader_filter)
    buffer = property(lambda self: self.parts.buffer)
    stats = property(lambda self: self.parts.stats)
    poses = property(lambda self: self.parts.poses)
