"""Seam plans as flow conditioning for the local backends (torch; HALO's convention).

rtc and hard become `halo_ros.model.guidance.Guidance` implementations; prefix (training-time
RTC) becomes the clean prefix the sampler keeps fixed at flow time 0.

HALO integrates t: 1 (noise) -> 0 (data) with x <- x - v dt and x0_hat = x_t - t v. The RTC paper
uses tau = 1 - t; its update x <- x + dtau (v_tau + lambda g) becomes v' = v - lambda g here, with
g = (d x0_hat / d x_t)^T [W * (Y - x0_hat)] from one vector-Jacobian product through the action
expert, and lambda = min(beta, (tau^2 + (1 - tau)^2) / (tau (1 - tau))) (the guidance clip).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from halo_ros.model.guidance import Guidance, x0_estimate
from halo_ros.runtime.seam import DEFAULT_MAX_GUIDANCE, SeamMode, SeamPlan


def guidance_weight(t: float, max_weight: float) -> float:
    """lambda(tau), tau = 1 - t, clipped to `max_weight` (it diverges at both ends)."""
    tau = 1.0 - t
    if tau <= 0.0 or tau >= 1.0:
        return max_weight
    return min(max_weight, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))


class RtcGuidance:
    """Guided inpainting toward `target` with per-index soft `weights` (real-time chunking)."""

    def __init__(
        self, target: Tensor, weights: Tensor, *, max_weight: float = DEFAULT_MAX_GUIDANCE
    ):
        if target.ndim != 2 or weights.shape != target.shape[:1]:
            raise ValueError(
                f'RTC target (H, A) and weights (H,) disagree: {tuple(target.shape)}, '
                f'{tuple(weights.shape)}'
            )
        if max_weight <= 0:
            raise ValueError(f'max_weight must be positive, got {max_weight}')
        self.target = target.float()
        self.weights = weights.float()[:, None]
        self.max_weight = max_weight

    def velocity(
        self, x_t: Tensor, t: float, step: int, velocity_fn: Callable[[Tensor], Tensor]
    ) -> Tensor:
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            v = velocity_fn(x).float()
            x0_hat = x0_estimate(x, t, v)
            error = self.weights.to(x.device) * (self.target.to(x.device) - x0_hat)
            (correction,) = torch.autograd.grad(x0_hat, x, grad_outputs=error.detach())
        return (v - guidance_weight(t, self.max_weight) * correction).detach()


class HardInpaintGuidance:
    """Rows with weight 1 follow the straight path to `target` (x0_hat = target exactly at every
    step, so the sample ends on it); other rows take the model velocity. Gradient-free."""

    def __init__(self, target: Tensor, weights: Tensor):
        if target.ndim != 2 or weights.shape != target.shape[:1]:
            raise ValueError(
                f'hard inpainting target (H, A) and weights (H,) disagree: '
                f'{tuple(target.shape)}, {tuple(weights.shape)}'
            )
        self.target = target.float()
        self.mask = (weights >= 0.5)[:, None]

    def velocity(
        self, x_t: Tensor, t: float, step: int, velocity_fn: Callable[[Tensor], Tensor]
    ) -> Tensor:
        with torch.no_grad():
            return hard_inpaint(x_t, t, velocity_fn(x_t).float(), self.target, self.mask)


def hard_inpaint(x_t: Tensor, t: float, v: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """The velocity v with masked rows replaced by the straight path to `target` (mask [K, 1])."""
    if t <= 0.0:
        return v
    forced = (x_t.float() - target.to(x_t.device)) / t
    return torch.where(mask.to(x_t.device), forced, v)


def flow_conditioning(plan: SeamPlan | None) -> tuple[Guidance | None, Tensor | None]:
    """(guidance, clean prefix (d, A)) for a seam plan; (None, None) samples freely."""
    if plan is None:
        return None, None
    target = torch.from_numpy(plan.target)
    weights = torch.from_numpy(plan.weights)
    if plan.mode is SeamMode.RTC:
        return RtcGuidance(target, weights, max_weight=plan.max_guidance), None
    if plan.mode is SeamMode.HARD:
        return HardInpaintGuidance(target, weights), None
    if plan.mode is SeamMode.PREFIX:
        return None, torch.from_numpy(plan.prefix) if plan.delay_steps else None
    raise ValueError(f'no flow conditioning for seam mode {plan.mode}')
