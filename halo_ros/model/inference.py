"""Inference on a prefix KV cache: prefill, text decoding and the two flow samplers.

Deliberate deviations from the released inference code (`inference/*.py`), each on purpose:
- CFG contexts are built from the segments (`prefill_cfg`): the text-free context holds the
  images only, the image-free one the text only. The release's `update_context_image` mutates and
  returns the same dict, so its text-CFG context *is* the conditional one (each frame inserted
  twice, text guidance a no-op).
- No random 20% switch of reasoning/CFG per call (`HALO.get_action`): the caller decides.
- The VAE encodes to the posterior mean (the release samples), so prefills are deterministic.
- `num_steps` counts Euler steps (the release's `num_timesteps` counts grid points: 10 -> 9).
Kept because the released weights depend on it: RoPE rules, routing of framing tokens through the
und expert, the time convention, the shifted image schedule and the 1.4 subgoal divisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from halo_ros.model.cache import KVCache
from halo_ros.model.embed import grid_position_ids
from halo_ros.model.guidance import Guidance
from halo_ros.model.halo import Block, HaloModel
from halo_ros.model.segments import (
    LatentSegment,
    Segment,
    TextSegment,
    VAEImageSegment,
    ViTImageSegment,
)

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, float, Tensor, Tensor], None]  # (step, t, x_t, v)


def _cache_tensors(cache: KVCache) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rope = torch.tensor(cache.next_rope, device=cache.k.device)
    return cache.k, cache.v, cache.key_valid(), rope


def segment_block(model: HaloModel, segment: Segment) -> Block:
    st = model.cfg.special_tokens
    device = model.input_linear_layer.weight.device
    if isinstance(segment, TextSegment):
        ids = torch.tensor([st.im_start, *segment.ids, st.im_end], device=device)
        return model.text_block(ids)
    if isinstance(segment, ViTImageSegment):
        return model.vit_block(segment.image.to(device))
    if isinstance(segment, VAEImageSegment):
        tokens, grid = encode_image_latents(model, segment.image.to(device))
        segment = LatentSegment(tokens, grid)
    if isinstance(segment, LatentSegment):
        h, w = segment.grid_hw
        pos = grid_position_ids(h, w, model.cfg.max_latent_size).to(device)
        zero = torch.zeros((), device=device)
        return model.latent_block(segment.tokens.to(device), zero, pos, clean=True)
    raise TypeError(f'prefill: unknown segment type {type(segment).__name__}')


@torch.no_grad()
def prefill(model: HaloModel, segments: Sequence[Segment], cache: KVCache | None = None) -> KVCache:
    """Append segments, in order, to a cache (a new one if None) and return the new cache."""
    if cache is None:
        cache = KVCache.empty(
            model.cfg.llm, dtype=model.dtype, device=model.input_linear_layer.weight.device
        )
    for segment in segments:
        block = segment_block(model, segment)
        k_past, v_past, valid, rope = _cache_tensors(cache)
        _, k, v = model.run_block(block, k_past, v_past, valid, rope)
        cache = cache.append(k, v, block.rope_advance)
    return cache


@dataclass(frozen=True)
class CfgCaches:
    """The three contexts of classifier-free guidance, built from the same segments."""

    full: KVCache
    no_text: KVCache  # images only (released "cfg_text" context, without its aliasing bug)
    no_image: KVCache  # text only (released "cfg_img" context)


def prefill_cfg(model: HaloModel, segments: Sequence[Segment]) -> CfgCaches:
    images = [s for s in segments if not isinstance(s, TextSegment)]
    texts = [s for s in segments if isinstance(s, TextSegment)]
    return CfgCaches(prefill(model, segments), prefill(model, images), prefill(model, texts))


# ---- text -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeResult:
    token_ids: list[int]  # generated ids, without the leading <|im_start|>, without the end token
    logits: Tensor  # [steps, V] fp32, row i produced token i
    stopped: bool  # True if the end token was produced before the budget ran out


@torch.no_grad()
def decode_text(
    model: HaloModel,
    cache: KVCache,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    end_token: int | None = None,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Decode from <|im_start|> at the cache's next RoPE id, one und query per token.

    Greedy when temperature == 0, else softmax sampling at that temperature. Stops after the end
    token (default <|im_end|>) or `max_new_tokens`. Works on its own buffer; the cache is not
    changed. Re-prefill the text (as the release does) to condition later stages on it.
    """
    if max_new_tokens <= 0:
        raise ValueError(f'decode_text: max_new_tokens must be positive, got {max_new_tokens}')
    st = model.cfg.special_tokens
    end = st.im_end if end_token is None else end_token
    # A fixed-size buffer with a key-validity mask, filled in place: no per-token re-allocation
    # of the whole cache, and the same padded form the exported graphs use.
    k_buf, v_buf, valid = cache.padded(cache.length + max_new_tokens)
    row, rope = cache.length, cache.next_rope
    token = st.im_start
    out, rows, stopped = [], [], False
    for _ in range(max_new_tokens):
        ids = torch.tensor([token], device=k_buf.device)
        rope_t = torch.tensor(rope, device=k_buf.device)
        logits, k, v = model.text_logits(ids, k_buf, v_buf, valid, rope_t)  # [1, V]
        k_buf[:, row], v_buf[:, row], valid[row] = k[:, 0], v[:, 0], True
        row, rope = row + 1, rope + 1
        rows.append(logits[0])
        if temperature > 0:
            probs = torch.softmax(logits[0] / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:
            token = int(logits[0].argmax())
        if token == end:
            stopped = True
            break
        out.append(token)
    return DecodeResult(out, torch.stack(rows), stopped)


# ---- actions ----------------------------------------------------------------------------------


def flow_schedule(num_steps: int, shift: float = 1.0) -> Tensor:
    """num_steps + 1 times from 1 to 0 (fp32 linspace), optionally shifted
    t' = s t / (1 + (s - 1) t) as for the subgoal image."""
    if num_steps <= 0:
        raise ValueError(f'flow_schedule: num_steps must be positive, got {num_steps}')
    ts = torch.linspace(1, 0, num_steps + 1)
    if shift != 1.0:
        ts = shift * ts / (1 + (shift - 1) * ts)
    return ts


def prefix_times(t: Tensor, length: int, prefix_len: int) -> Tensor:
    """Per-token flow times [length]: 0 (clean) on the first `prefix_len` rows, t elsewhere."""
    rows = torch.arange(length, device=t.device)
    return torch.where(rows < prefix_len, torch.zeros_like(t), t.expand(length))


def sample_actions(
    model: HaloModel,
    cache: KVCache,
    noise: Tensor,
    *,
    num_steps: int = 9,
    guidance: Guidance | None = None,
    prefix: Tensor | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Integrate an action chunk from noise [K, A] (t = 1) to t = 0 with Euler steps, in fp32.

    Released default: 9 steps on linspace(1, 0, 10), no shift, no CFG. The cache is read, never
    written. `guidance`, if given, supplies the velocity of each step (real-time chunking).
    `prefix` [d, A] (training-time real-time chunking): the first d rows are these clean actions
    at flow time 0 through every step, and come out unchanged.
    """
    if guidance is not None and prefix is not None:
        raise ValueError('sample_actions: guidance and a clean prefix are alternative seams')
    k_past, v_past, valid, rope = _cache_tensors(cache)
    ts = flow_schedule(num_steps).to(noise.device)
    x = noise.float()
    d = 0 if prefix is None else prefix.shape[0]
    if d:
        x = torch.cat([prefix.to(x), x[d:]])
    for i in range(num_steps):
        t = prefix_times(ts[i], x.shape[0], d) if d else ts[i]

        def velocity_fn(x_in: Tensor, t: Tensor = t) -> Tensor:
            return model.action_velocity(x_in, t, k_past, v_past, valid, rope)

        with torch.set_grad_enabled(guidance is not None):
            v = (
                guidance.velocity(x, float(t), i, velocity_fn)
                if guidance is not None
                else velocity_fn(x)
            )
        v = v.detach().float()
        if d:
            v[:d] = 0.0  # the prefix stays where it is
        if on_step is not None:
            on_step(i, float(ts[i]), x, v)
        x = x - v * (ts[i] - ts[i + 1])
    return x


# ---- subgoal image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cfg:
    """Released classifier-free guidance (`bagel.py:_forward_flow`, renorm "global"):
    v' = v_img + s_img((v_txt + s_txt(v - v_txt)) - v_img), scaled by
    clamp(|v| / |v'|, renorm_min, 1), for t in (lo, hi]. As released, nothing is applied unless
    text_scale > 1, and a branch whose scale is <= 1 is skipped."""

    caches: CfgCaches
    text_scale: float = 4.0  # released subgoal default (actions: 4.0 in halo_inference)
    img_scale: float = 2.0
    interval: tuple[float, float] = (0.4, 1.0)
    renorm_min: float = 0.0

    def active(self, t: float) -> bool:
        return self.text_scale > 1.0 and self.interval[0] < t <= self.interval[1]

    def combine(self, v: Tensor, v_text: Tensor, v_img: Tensor | None) -> Tensor:
        guided = v_text + self.text_scale * (v - v_text)
        if v_img is not None:
            guided = v_img + self.img_scale * (guided - v_img)
        scale = (v.norm() / (guided.norm() + 1e-8)).clamp(min=self.renorm_min, max=1.0)
        return guided * scale

    def velocity(self, fn: Callable[[KVCache], Tensor], t: float) -> Tensor:
        """fn(cache) -> velocity against that context; returns the guided velocity at t."""
        v = fn(self.caches.full)
        if not self.active(t):
            return v
        v_img = fn(self.caches.no_image) if self.img_scale > 1.0 else None
        return self.combine(v, fn(self.caches.no_text), v_img)


SubgoalCfg = Cfg


class ActionCfg:
    """Action CFG as a `Guidance` (the release's action CFG; off by default because the
    fine-tune trained no unconditional contexts). Pass the full cache to `sample_actions`."""

    def __init__(self, model: HaloModel, cfg: Cfg) -> None:
        self.model, self.cfg = model, cfg

    def velocity(
        self, x_t: Tensor, t: float, step: int, velocity_fn: Callable[[Tensor], Tensor]
    ) -> Tensor:
        def fn(cache: KVCache) -> Tensor:
            if cache is self.cfg.caches.full:
                return velocity_fn(x_t)
            k_past, v_past, valid, rope = _cache_tensors(cache)
            return self.model.action_velocity(
                x_t, torch.tensor(t, dtype=torch.float32), k_past, v_past, valid, rope
            )

        return self.cfg.velocity(fn, t)


@torch.no_grad()
def sample_subgoal(
    model: HaloModel,
    cache: KVCache,
    grid_hw: tuple[int, int],
    noise: Tensor,
    *,
    num_steps: int = 49,
    shift: float = 3.0,
    cfg: Cfg | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Sample subgoal latent tokens [h*w, 64] from noise (t = 1) on an h x w token grid.

    Released defaults: 49 Euler steps on linspace(1, 0, 50) shifted by 3.0, text CFG 4.0 and
    image CFG 2.0 on (0.4, 1] (`cfg.caches.full` must then be `cache`). The result is divided by
    `subgoal_latent_divisor` (1.4) like the release before it is decoded or re-inserted
    (`LatentSegment`).
    """
    h, w = grid_hw
    if noise.shape != (h * w, model.cfg.patch_latent_dim):
        raise ValueError(
            f'sample_subgoal: noise shape {tuple(noise.shape)} != '
            f'({h * w}, {model.cfg.patch_latent_dim})'
        )
    if cfg is not None and cfg.caches.full is not cache:
        raise ValueError('sample_subgoal: cfg.caches.full must be the cache being sampled from')
    pos = grid_position_ids(h, w, model.cfg.max_latent_size).to(noise.device)
    ts = flow_schedule(num_steps, shift).to(noise.device)

    x = noise.float()
    for i in range(num_steps):
        t = ts[i]

        def velocity(c: KVCache, x: Tensor = x, t: Tensor = t) -> Tensor:
            k_past, v_past, valid, rope = _cache_tensors(c)
            return model.latent_velocity(x, t, pos, k_past, v_past, valid, rope)

        v = velocity(cache) if cfg is None else cfg.velocity(velocity, float(t))
        if on_step is not None:
            on_step(i, float(t), x, v)
        x = x - v * (ts[i] - ts[i + 1])
    return x / model.cfg.subgoal_latent_divisor


# ---- latents <-> images -----------------------------------------------------------------------


def encode_image_latents(model: HaloModel, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Normalised image [3, H, W] (multiples of 16) -> (tokens [h*w, 64], (h, w))."""
    h, w = model.latent_grid(image.shape[1], image.shape[2])
    p, c = model.cfg.latent_patch_size, model.cfg.vae.z_channels
    z = model.vae.encode(image[None].to(model.dtype))[0]  # [c, H/8, W/8]
    z = z[:, : h * p, : w * p].reshape(c, h, p, w, p)
    return torch.einsum('chpwq->hwpqc', z).reshape(h * w, p * p * c), (h, w)


def decode_latent_image(model: HaloModel, tokens: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """Latent tokens [h*w, 64] -> image [3, 16h, 16w] in [-1, 1]."""
    h, w = grid_hw
    p, c = model.cfg.latent_patch_size, model.cfg.vae.z_channels
    z = tokens.reshape(h, w, p, p, c)
    z = torch.einsum('hwpqc->chpwq', z).reshape(1, c, h * p, w * p)
    with torch.no_grad():
        return model.vae.decode(z.to(model.dtype))[0].float().clamp(-1, 1)
