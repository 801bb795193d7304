"""A smooth, deterministic flow model for the seam harness (random HALO weights make seams
meaningless): an `Engine` whose action velocity is the exact flow-matching field of a Gaussian.

Per joint j the chunk is x0 ~ N(mu_j, sigma_j^2 K), K a squared-exponential kernel over the
chunk's time index: every sample is a smooth trajectory around the reference motion mu (a sum of
slow sinusoids evaluated at the observation time + k dt), and two samples from different noise
disagree smoothly, so consecutive chunks meet with a seam. The velocity is differentiable in x,
so real-time chunking's vector-Jacobian product works as on the real action expert. With
x_t = t n + (1 - t) x0 (HALO's convention) the posterior mean is affine in x_t; in K's eigenbasis
(eigenvalues lam) E[x0 | x_t] = m + (1 - t) lam (x_t - (1 - t) m) / (t^2 + (1 - t)^2 lam).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from halo_ros.engine.interface import ActionResult, Engine, EngineInfo, Observation, Reasoning
from halo_ros.joints import DOF, GRIPPER_INDICES
from halo_ros.model.inference import flow_schedule
from halo_ros.runtime.guidance import flow_conditioning
from halo_ros.runtime.seam import SeamPlan


class GaussianChunkFlow:
    def __init__(
        self,
        length: int,
        sigma: np.ndarray,  # (A,) deviation scale per joint
        *,
        length_scale_steps: float = 10.0,
        jitter: float = 1e-6,  # keeps K positive definite (0.1% of sigma as white noise)
    ):
        i = np.arange(length, dtype=np.float64)
        kernel = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * length_scale_steps**2))
        kappa, basis = np.linalg.eigh(kernel + jitter * np.eye(length))
        self.basis = torch.from_numpy(basis).float()  # (H, H), columns = eigenvectors
        sigma = np.asarray(sigma, dtype=np.float64)
        self.lam = torch.from_numpy(np.clip(kappa, 0, None)[:, None] * sigma[None] ** 2).float()

    def x0_mean(self, x_t: torch.Tensor, t: float, mean: torch.Tensor) -> torch.Tensor:
        a = 1.0 - t
        xc = self.basis.T @ x_t  # (H, A) in the eigenbasis
        mc = self.basis.T @ mean
        post = mc + a * self.lam * (xc - a * mc) / (t * t + a * a * self.lam)
        return self.basis @ post

    def velocity(self, x_t: torch.Tensor, t: float, mean: torch.Tensor) -> torch.Tensor:
        """v with x0_hat = x_t - t v equal to the posterior mean (t > 0)."""
        return (x_t - self.x0_mean(x_t, t, mean)) / t


def reference_motion(times_s: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n,) s -> (n, 14): slow sinusoids per joint (arms +-0.3..0.6 rad, grippers 0.1..0.9)."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.3, 0.6, DOF)
    frequency = rng.uniform(0.15, 0.4, DOF)
    phase = rng.uniform(0, 2 * math.pi, DOF)
    offset = np.zeros(DOF)
    for g in GRIPPER_INDICES:
        amplitude[g], offset[g] = 0.4, 0.5
    return offset + amplitude * np.sin(2 * math.pi * frequency * times_s[:, None] + phase)


class SmoothFlowEngine(Engine):
    """act(): integrate the Gaussian flow exactly like `inference.sample_actions` (same schedule,
    same guidance hook). `on_act` lets the harness advance its simulated clock (injected delay)."""

    def __init__(
        self,
        *,
        chunk_length: int = 50,
        flow_steps: int = 9,
        dt_s: float = 0.02,
        arm_sigma: float = 0.1,
        gripper_sigma: float = 0.08,
        length_scale_steps: float = 10.0,
        seed: int = 0,
        on_act=None,
    ):
        sigma = np.full(DOF, arm_sigma)
        sigma[list(GRIPPER_INDICES)] = gripper_sigma
        self.flow = GaussianChunkFlow(chunk_length, sigma, length_scale_steps=length_scale_steps)
        self.dt_s = dt_s
        self.seed = seed
        self.on_act = on_act
        self._info = EngineInfo(
            backend='analytic',
            model_name='gaussian-smooth-flow',
            model_hash=f'seed{seed}',
            action_dim=DOF,
            chunk_length=chunk_length,
            flow_steps=flow_steps,
            cameras=(),
            image_hw=(0, 0),
            supports_guidance_gradients=True,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def mean(self, stamp_ns: int) -> torch.Tensor:
        times = stamp_ns / 1e9 + np.arange(self._info.chunk_length) * self.dt_s
        return torch.from_numpy(reference_motion(times, self.seed)).float()

    def act(
        self,
        observation: Observation,
        reasoning: Reasoning | None,
        noise: np.ndarray,
        seam: SeamPlan | None = None,
    ) -> ActionResult:
        guidance, prefix = flow_conditioning(seam)
        if prefix is not None:
            raise NotImplementedError(
                'the analytic flow has no prefix-conditioned field (seam mode prefix needs a '
                'model trained for it: compare it on a checkpoint with `halo-ros eval`)'
            )
        mean = self.mean(observation.stamp_ns)
        ts = flow_schedule(self._info.flow_steps)
        x = torch.from_numpy(noise).float()
        for i in range(self._info.flow_steps):
            t = float(ts[i])

            def velocity_fn(x_in: torch.Tensor, t: float = t) -> torch.Tensor:
                return self.flow.velocity(x_in, t, mean)

            with torch.no_grad() if guidance is None else torch.enable_grad():
                v = velocity_fn(x) if guidance is None else guidance.velocity(x, t, i, velocity_fn)
            x = x - v.detach() * float(ts[i] - ts[i + 1])
        if self.on_act is not None:
            self.on_act()
        return ActionResult(x.numpy().astype(np.float32), {'total': 0.0})

    def reason(self, observation, instruction, version, *, subgoal=True, max_tokens=64):
        raise NotImplementedError('the seam harness flow model has no reasoning (actions only)')
