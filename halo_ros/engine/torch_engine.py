"""The PyTorch engine: HaloModel in eager mode on CPU or CUDA (the reference backend).

Prefix layout, per HALO's data (`anchors-model-trt.md` §1.2): every camera frame as ViT tokens,
the prompt, the newest reasoning text, and the subgoal latents as clean gen tokens; the action
block then runs against that cache. The reasoner builds the same prefix up to the prompt.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from halo_ros.engine.interface import (
    ActionResult,
    Engine,
    EngineInfo,
    Observation,
    Reasoning,
    StageTimer,
    check_act_inputs,
    check_observation,
    make_reasoning,
)
from halo_ros.model.halo import HaloModel
from halo_ros.model.inference import decode_latent_image
from halo_ros.model.preprocess import display_image, vae_size, vit_image
from halo_ros.model.segments import LatentSegment, TextSegment, ViTImageSegment
from halo_ros.model.tokenizer import HaloTokenizer
from halo_ros.reasoning import prompt
from halo_ros.runtime.guidance import flow_conditioning
from halo_ros.runtime.seam import SeamPlan


class TorchEngine(Engine):
    def __init__(
        self,
        model: HaloModel,
        tokenizer: HaloTokenizer,
        *,
        model_name: str,
        model_hash: str,
        cameras: tuple[str, ...],
        chunk_length: int = 50,
        flow_steps: int = 9,
        subgoal_steps: int = 24,
        subgoal_camera: str = 'cam_high',
        image_hw: tuple[int, int] = (240, 320),
    ):
        self._model = model.eval()
        self._tok = tokenizer
        self._device = next(model.parameters()).device
        self._subgoal_steps = subgoal_steps
        self._subgoal_camera = subgoal_camera
        self._info = EngineInfo(
            backend='torch',
            model_name=model_name,
            model_hash=model_hash,
            action_dim=model.cfg.action_dim,
            chunk_length=chunk_length,
            flow_steps=flow_steps,
            cameras=tuple(cameras),
            image_hw=tuple(image_hw),
            supports_guidance_gradients=True,
        )
        self._reason_lock = threading.Lock()  # one reasoning cycle at a time

    @property
    def info(self) -> EngineInfo:
        return self._info

    # -- prefix ----------------------------------------------------------------------------------

    def _image_segments(self, observation: Observation) -> list:
        vit = self._model.cfg.vit
        return [
            ViTImageSegment(
                vit_image(
                    observation.images[c], vit.image_max_px, vit.image_min_px, vit.patch_size
                ).to(self._device)
            )
            for c in self._info.cameras
        ]

    def _text(self, text: str) -> TextSegment:
        return TextSegment(tuple(self._tok.encode(text)))

    # -- fast loop -------------------------------------------------------------------------------

    def act(
        self,
        observation: Observation,
        reasoning: Reasoning | None,
        noise: np.ndarray,
        seam: SeamPlan | None = None,
    ) -> ActionResult:
        timer = StageTimer()
        check_act_inputs(observation, noise, seam, self._info)
        guidance, clean_prefix = flow_conditioning(seam)
        with torch.no_grad():
            segments = self._image_segments(observation)
            instruction = reasoning.instruction if reasoning else ''
            segments.append(self._text(prompt(instruction)))
            if reasoning is not None:
                segments.append(self._text(reasoning.text))
                if reasoning.subgoal_tokens is not None:
                    tokens = torch.from_numpy(reasoning.subgoal_tokens).to(self._device)
                    segments.append(LatentSegment(tokens, tuple(reasoning.subgoal_grid)))
            timer.since_start('assemble')
            with timer.stage('prefill'):
                cache = self._model.prefill(segments)
            with timer.stage('flow'):
                actions = self._model.sample_actions(
                    cache,
                    torch.from_numpy(noise).to(self._device),
                    num_steps=self._info.flow_steps,
                    guidance=guidance,
                    prefix=None if clean_prefix is None else clean_prefix.to(self._device),
                )
        return ActionResult(actions.float().cpu().numpy(), timer.done())

    # -- slow loop -------------------------------------------------------------------------------

    def reason(
        self,
        observation: Observation,
        instruction: str,
        version: int,
        *,
        subgoal: bool = True,
        max_tokens: int = 64,
    ) -> Reasoning:
        timer = StageTimer()
        check_observation(observation, self._info)
        with self._reason_lock, torch.no_grad():
            with timer.stage('prefill'):
                segments = self._image_segments(observation) + [self._text(prompt(instruction))]
                cache = self._model.prefill(segments)
            with timer.stage('decode'):
                decoded = self._model.decode_text(cache, max_tokens)
                text = self._tok.decode(decoded.token_ids)
            timer.ms['tokens'] = float(len(decoded.token_ids))
            tokens = grid = image = None
            if subgoal:
                with timer.stage('subgoal'):
                    cache = self._model.prefill([self._text(text)], cache)
                    tokens, grid = self._sample_subgoal(cache, observation, version)
                with timer.stage('vae_decode'):
                    image = display_image(decode_latent_image(self._model, tokens, grid))
                    tokens = tokens.float().cpu().numpy()
        timings = timer.done()
        return make_reasoning(
            version,
            instruction,
            text,
            observation,
            timings,
            subgoal_tokens=tokens,
            subgoal_grid=grid,
            subgoal_image=image,
        )

    def _sample_subgoal(self, cache, observation: Observation, version: int):
        vae = self._model.cfg.vae
        frame = observation.images[self._subgoal_camera]
        grid = self._model.latent_grid(*vae_size(self._model.cfg, *frame.shape[:2]))
        width = self._model.cfg.latent_patch_size**2 * vae.z_channels
        # Seeded per version: the same observation and version give the same subgoal everywhere.
        generator = torch.Generator().manual_seed(version)
        noise = torch.randn(grid[0] * grid[1], width, generator=generator).to(self._device)
        tokens = self._model.sample_subgoal(cache, grid, noise, num_steps=self._subgoal_steps)
        return tokens, grid
