"""The engine pipeline over static graphs, written once for every backend's `GraphRunner`.

act:    frames -> `vit` -> `prefill` (frames + prompt + newest reasoning + subgoal latents)
        -> `action_step` x flow_steps (fp32 Euler, the cache is only read)
reason: frames -> `vit` -> `prefill` (frames + prompt) -> `decode_step` per token
        -> `prefill` (+ the decoded text) -> `subgoal_step` x subgoal_steps -> `vae_decode`

Same numerics as `TorchEngine` (the eager reference): the prefix in the static layout gives the
same K/V as prefilling segment by segment, and the samplers follow `halo_ros.model.inference`.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

from halo_ros.engine.graphs import RTC_GRAPH, GraphShapes
from halo_ros.engine.interface import (
    ActionResult,
    Engine,
    EngineInfo,
    EngineInputError,
    Observation,
    Reasoning,
    StageTimer,
    check_act_inputs,
    check_array,
    check_observation,
    make_reasoning,
)
from halo_ros.engine.layout import PrefixFeed, PrefixTooLongError, assemble
from halo_ros.engine.runner import GraphRunner
from halo_ros.model.config import HaloConfig
from halo_ros.model.inference import flow_schedule, prefix_times
from halo_ros.model.preprocess import display_image, vit_image
from halo_ros.model.tokenizer import HaloTokenizer
from halo_ros.model.vit import patchify
from halo_ros.reasoning import prompt
from halo_ros.runtime.guidance import guidance_weight, hard_inpaint
from halo_ros.runtime.seam import SeamMode, SeamPlan

SUBGOAL_SHIFT = 3.0  # released subgoal schedule (inference.sample_subgoal)


class GraphEngine(Engine):
    def __init__(
        self,
        runner: GraphRunner,
        tokenizer: HaloTokenizer,
        cfg: HaloConfig,
        shapes: GraphShapes,
        *,
        model_hash: str,
        cameras: tuple[str, ...],
        image_hw: tuple[int, int],
        flow_steps: int = 9,
        subgoal_steps: int = 24,
    ) -> None:
        if len(cameras) != shapes.layout.cameras:
            raise ValueError(
                f'cameras {cameras} do not match the graphs, built for {shapes.layout.cameras}'
            )
        self._runner, self._tok, self._cfg, self._shapes = runner, tokenizer, cfg, shapes
        self._subgoal_steps = subgoal_steps
        self._info = EngineInfo(
            backend=runner.backend,
            model_name=cfg.name,
            model_hash=model_hash,
            action_dim=cfg.action_dim,
            chunk_length=shapes.chunk_length,
            flow_steps=flow_steps,
            cameras=tuple(cameras),
            image_hw=tuple(image_hw),
            supports_guidance_gradients=runner.supports_gradients,
        )
        self._act_lock = threading.Lock()  # one chunk at a time
        self._reason_lock = threading.Lock()  # one reasoning cycle at a time

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def runner(self) -> GraphRunner:
        return self._runner

    def close(self) -> None:
        self._runner.close()

    # -- shared stages ---------------------------------------------------------------------------

    def _vit(self, observation: Observation) -> Tensor:
        vit = self._cfg.vit
        frames = [
            patchify(
                vit_image(
                    observation.images[c], vit.image_max_px, vit.image_min_px, vit.patch_size
                ),
                vit.patch_size,
            )
            for c in self._info.cameras
        ]
        patches = torch.stack(frames).to(self._runner.device)  # [F, T, p*p*3]
        return self._runner.run('vit', {'patches': patches})['vit_embeds']

    def _feed(self, texts: list[list[int]], latents: bool, what: str) -> PrefixFeed:
        st = self._cfg.special_tokens
        try:
            return assemble(
                self._shapes.layout, texts, im_start=st.im_start, im_end=st.im_end, latents=latents
            )
        except PrefixTooLongError as e:
            raise EngineInputError(f'{what}: {e}') from e

    def _prefill(self, vit_embeds: Tensor, feed: PrefixFeed, latents: Tensor | None):
        """-> (k, v, key_valid, rope) of the prefix."""
        device, layout = self._runner.device, self._shapes.layout
        if latents is None:
            latents = torch.zeros(layout.latent_tokens, self._cfg.patch_latent_dim)
        feeds = {
            'vit_embeds': vit_embeds,
            'text_ids': torch.from_numpy(feed.text_ids),
            'latents': latents,
            'segment': torch.from_numpy(feed.segment),
            'causal': torch.from_numpy(feed.causal),
            'positions': torch.from_numpy(feed.positions),
        }
        out = self._runner.run('prefill', {n: t.to(device) for n, t in feeds.items()})
        key_valid = torch.from_numpy(feed.key_valid).to(device)
        return out['k'], out['v'], key_valid, torch.tensor(feed.next_rope, device=device)

    def _subgoal_latents(self, reasoning: Reasoning) -> Tensor | None:
        if reasoning.subgoal_tokens is None:
            return None
        layout = self._shapes.layout
        if reasoning.subgoal_grid is None or tuple(reasoning.subgoal_grid) != layout.latent_grid:
            raise EngineInputError(
                f'reasoning.subgoal_grid: expected {layout.latent_grid}, '
                f'got {reasoning.subgoal_grid}'
            )
        tokens = check_array(
            'reasoning.subgoal_tokens',
            reasoning.subgoal_tokens,
            (layout.latent_tokens, self._cfg.patch_latent_dim),
            np.float32,
        )
        return torch.from_numpy(tokens)

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
        texts = [self._tok.encode(prompt(reasoning.instruction if reasoning else ''))]
        latents = None
        if reasoning is not None:
            texts.append(self._tok.encode(reasoning.text))
            latents = self._subgoal_latents(reasoning)
        feed = self._feed(texts, latents is not None, 'reasoning.text')
        with self._act_lock:
            timer.since_start('assemble')
            with timer.stage('vit'):
                vit_embeds = self._vit(observation)
            with timer.stage('prefill'):
                k, v, key_valid, rope = self._prefill(vit_embeds, feed, latents)
            with timer.stage('flow'):
                actions = self._flow(torch.from_numpy(noise), k, v, key_valid, rope, seam)
        return ActionResult(actions.cpu().numpy(), timer.done())

    def _flow(self, noise, k, v, key_valid, rope, seam: SeamPlan | None) -> Tensor:
        """fp32 Euler integration from t = 1 to 0 (as `inference.sample_actions`) with the seam:
        prefix keeps the executed rows fixed at flow time 0, hard forces them onto the old
        tail, rtc runs the fused guided step (`action_step_rtc`)."""
        device = self._runner.device
        ts = flow_schedule(self._info.flow_steps).to(device)
        x = noise.float().to(device)
        length = x.shape[0]
        mode = None if seam is None else seam.mode
        d = seam.delay_steps if mode is SeamMode.PREFIX else 0
        if seam is not None:
            target = torch.from_numpy(seam.target).to(device)
            weights = torch.from_numpy(seam.weights).to(device)
        if d:
            x = torch.cat([target[:d], x[d:]])
        for i in range(self._info.flow_steps):
            t = prefix_times(ts[i], length, d)  # the graphs take one time per action row
            feeds = {'x_t': x, 't': t, 'k': k, 'v': v, 'key_valid': key_valid, 'rope': rope}
            if mode is SeamMode.RTC:
                lam = guidance_weight(float(ts[i]), seam.max_guidance)
                feeds |= {'target': target, 'weights': weights, 'guidance': torch.tensor(lam)}
                vel = self._runner.run(RTC_GRAPH, feeds)['velocity'].float()
            else:
                vel = self._runner.run('action_step', feeds)['velocity'].float()
                if mode is SeamMode.HARD:
                    vel = hard_inpaint(x, float(ts[i]), vel, target, (weights >= 0.5)[:, None])
            if d:
                vel[:d] = 0.0  # the executed prefix stays where it is
            x = x - vel * (ts[i] - ts[i + 1])
        return x

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
        layout = self._shapes.layout
        if not 0 < max_tokens <= layout.decode_capacity:
            raise EngineInputError(
                f'max_tokens: {max_tokens} is outside 1..decode_capacity {layout.decode_capacity}'
            )
        prompt_ids = self._tok.encode(prompt(instruction))
        feed = self._feed([prompt_ids], False, 'instruction')
        with self._reason_lock, torch.no_grad():
            with timer.stage('prefill'):
                vit_embeds = self._vit(observation)
                k, v, key_valid, rope = self._prefill(vit_embeds, feed, None)
            with timer.stage('decode'):
                ids = self._decode(k, v, key_valid, int(rope), max_tokens)
                text = self._tok.decode(ids)
            timer.ms['tokens'] = float(len(ids))
            tokens = grid = image = None
            if subgoal:
                with timer.stage('subgoal'):
                    feed = self._feed([prompt_ids, self._tok.encode(text)], False, 'decoded text')
                    k, v, key_valid, rope = self._prefill(vit_embeds, feed, None)
                    latents = self._sample_subgoal(k, v, key_valid, rope, version)
                with timer.stage('vae_decode'):
                    image = self._runner.run('vae_decode', {'latents': latents})['image']
                    image = display_image(image)
                    tokens, grid = latents.float().cpu().numpy(), layout.latent_grid
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

    def _decode(self, k, v, key_valid, rope: int, max_tokens: int) -> list[int]:
        """Greedy decoding from <|im_start|> into a fixed buffer (as `inference.decode_text`)."""
        layout, st = self._shapes.layout, self._cfg.special_tokens
        device = self._runner.device
        rows = layout.decode_rows
        shape = (k.shape[0], rows, *k.shape[2:])
        k_buf = torch.zeros(shape, dtype=k.dtype, device=device)
        v_buf = torch.zeros(shape, dtype=v.dtype, device=device)
        valid = torch.zeros(rows, dtype=torch.bool, device=device)
        p = layout.prefix_rows
        k_buf[:, :p], v_buf[:, :p], valid[:p] = k, v, key_valid
        token, out = st.im_start, []
        for row in range(p, p + max_tokens):
            feeds = {
                'token': torch.tensor([token], device=device),
                'k_cache': k_buf,
                'v_cache': v_buf,
                'key_valid': valid,
                'rope': torch.tensor(rope, device=device),
            }
            step = self._runner.run('decode_step', feeds)
            k_buf[:, row], v_buf[:, row], valid[row] = (
                step['k_new'][:, 0],
                step['v_new'][:, 0],
                True,
            )
            rope += 1
            token = int(step['logits'][0].argmax())
            if token == st.im_end:
                break
            out.append(token)
        return out

    def _sample_subgoal(self, k, v, key_valid, rope, version: int) -> Tensor:
        layout, device = self._shapes.layout, self._runner.device
        # Seeded per version, as TorchEngine: the same observation and version give the same
        # subgoal on every backend.
        generator = torch.Generator().manual_seed(version)
        x = torch.randn(layout.latent_tokens, self._cfg.patch_latent_dim, generator=generator)
        x = x.to(device)
        ts = flow_schedule(self._subgoal_steps, SUBGOAL_SHIFT).to(device)
        for i in range(self._subgoal_steps):
            feeds = {'x_t': x, 't': ts[i], 'k': k, 'v': v, 'key_valid': key_valid, 'rope': rope}
            vel = self._runner.run('subgoal_step', feeds)['velocity']
            x = x - vel.float() * (ts[i] - ts[i + 1])
        return x / self._cfg.subgoal_latent_divisor
