"""The hook through which the runtime steers action sampling (e.g. real-time chunking).

HALO's flow convention (released `bagel.py`; t = 1 is pure noise, t = 0 is data):

    x_t = t * noise + (1 - t) * x0        velocity v = dx_t/dt = noise - x0

Sampling integrates from t = 1 to 0 with Euler steps x <- x - v * (t_i - t_{i+1}), so the
model's one-step estimate of the clean chunk at any step is

    x0_hat = x_t - t * v

A guidance implementation returns the velocity to integrate instead of the plain model velocity,
for instance one corrected so that x0_hat matches an already-committed prefix of actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Guidance(Protocol):
    def velocity(
        self, x_t: Tensor, t: float, step: int, velocity_fn: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The velocity to integrate at this flow step. velocity_fn(x) runs the action expert on
        x against the cached prefix and is differentiable w.r.t. x (for guided inpainting)."""
        ...


def x0_estimate(x_t: Tensor, t: float, v: Tensor) -> Tensor:
    """Clean-sample estimate x0_hat = x_t - t * v under HALO's convention."""
    return x_t - t * v
