"""The six inference graphs as static-shape torch modules (what every backend runs).

| graph | inputs -> outputs |
|---|---|
| `vit` | patches [F, T, p*p*3] fp32 -> vit_embeds [F, T, d] |
| `prefill` | vit_embeds, text_ids [N], latents [Tl, 64], segment/causal/positions [P] -> k, v |
| `decode_step` | token [1], k/v_cache [L, C, KV, D], key_valid [C], rope -> logits, k/v_new |
| `subgoal_step` | x_t [Tl, 64], t [], k, v [L, P, KV, D], key_valid [P], rope [] -> velocity |
| `action_step` | x_t [K, 14], t [K] (per action row), k, v, key_valid, rope -> velocity [K, 14] |
| `vae_decode` | latents [Tl, 64] -> image [3, H, W] in [-1, 1] |

Shapes come from a `PrefixLayout` and the chunk length. Weights and K/V run in the graph's
precision; flow states, times, velocities, logits and images stay fp32 (integration is fp32).
The action graphs take one flow time per action row, so a clean executed prefix (t = 0) can sit
beside the noisy rows (training-time real-time chunking); plain sampling repeats one time.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from halo_ros.engine.layout import PrefixLayout, assemble
from halo_ros.model.backbone import Expert
from halo_ros.model.embed import grid_position_ids
from halo_ros.model.halo import HaloModel
from halo_ros.model.inference import decode_latent_image

GRAPH_NAMES = ('vit', 'prefill', 'decode_step', 'subgoal_step', 'action_step', 'vae_decode')
# Guided RTC in one graph (forward + vector-Jacobian product): exported where a backend has no
# autograd; optional (a backend without it offers seams prefix, hard and none).
RTC_GRAPH = 'action_step_rtc'


def graph_precision_key(name: str) -> str:
    """The graph whose precision a graph runs in (the RTC step: the action step's)."""
    return 'action_step' if name == RTC_GRAPH else name


# The graphs' input/output contract; part of the export cache key, so a change re-exports.
# 2: action graphs take per-row flow times t [K]; 3: action_step_rtc replaces action_step_vjp.
GRAPH_FORMAT = 3


class Precision(enum.Enum):
    FP32 = 'fp32'
    BF16 = 'bf16'
    FP16 = 'fp16'

    @property
    def dtype(self) -> torch.dtype:
        return {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[self.value]


# Per-graph precision on a GPU: bf16 weights and K/V everywhere. GR00T keeps its ViT in fp32
# because fp16 overflowed (anchors-model-trt.md §4.1); bf16 has fp32's range, and an fp32 ViT
# alone would cost ~5 ms of the 25 ms chunk budget on an H100 (floor.py). fp32 stays for flow
# states, times, velocities, logits and images. On a CPU everything is fp32 (no fast bf16).
GPU_PRECISION = {
    'vit': Precision.BF16,
    'prefill': Precision.BF16,
    'decode_step': Precision.BF16,
    'subgoal_step': Precision.BF16,
    'action_step': Precision.BF16,
    'vae_decode': Precision.BF16,
}
CPU_PRECISION = dict.fromkeys(GRAPH_NAMES, Precision.FP32)


def cast_model(model: HaloModel, dtype: torch.dtype) -> HaloModel:
    """A copy of the model in `dtype` (a graph's precision), in eval mode."""
    return copy.deepcopy(model).to(dtype).eval()


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: how manifests and feed checks name dtypes."""
    return str(dtype).removeprefix('torch.')


@dataclass(frozen=True)
class GraphShapes:
    """Everything that fixes the graphs' shapes."""

    layout: PrefixLayout
    chunk_length: int


class VitGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model, self.layout = model, shapes.layout
        gh, gw = self.layout.vit_grid
        pos = grid_position_ids(gh, gw, model.cfg.vit.max_patches_per_side)
        self.register_buffer('position_ids', pos, persistent=False)

    def forward(self, patches: Tensor) -> Tensor:
        """patches [F, T, p*p*3] fp32 -> [F, T, d] (one attention per frame)."""
        model, pos = self.model, self.position_ids
        t = self.layout.vit_tokens
        # One frame per attention: its block-diagonal mask is all True (static, no repeat).
        mask = torch.ones(t, t, dtype=torch.bool, device=patches.device)
        frames = []
        for f in range(self.layout.cameras):
            x = model.vit_model.vision_model(patches[f].to(model.dtype), pos, mask)  # [T, vit_d]
            frames.append(model.connector(x) + model.vit_pos_embed(pos))  # = vit_embeds
        return torch.stack(frames)


def prefix_mask(segment: Tensor, causal: Tensor) -> Tensor:
    """Row i sees key j iff j is real and in an earlier segment, or in its own (j <= i if the
    row is causal) -> bool [P, P]. Padding rows (segment -1) see nothing."""
    p = segment.shape[0]
    index = torch.arange(p, device=segment.device)
    seg_q, seg_k = segment[:, None], segment[None, :]
    own = (seg_q == seg_k) & (~causal[:, None] | (index[None, :] <= index[:, None]))
    return (seg_k >= 0) & ((seg_k < seg_q) | own)


class PrefillGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model, self.layout = model, shapes.layout
        lh, lw = self.layout.latent_grid
        pos = grid_position_ids(lh, lw, model.cfg.max_latent_size)
        self.register_buffer('latent_position_ids', pos, persistent=False)
        start, n = self.layout.latent_start, self.layout.latent_tokens
        # Static routing: every row is und except the latent payload (gen).
        self.route = (
            (Expert.UND, 0, start + 1),
            (Expert.GEN, start + 1, start + 1 + n),
            (Expert.UND, start + 1 + n, start + 2 + n),
        )

    def forward(
        self,
        vit_embeds: Tensor,
        text_ids: Tensor,
        latents: Tensor,
        segment: Tensor,
        causal: Tensor,
        positions: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """-> k, v [L, P, KV, D] of every row (padding rows hold junk the key mask drops)."""
        model = self.model
        st = model.cfg.special_tokens
        vs, ve = model._framing(st.vision_start, st.vision_end)  # [1, d] each
        parts = []
        for f in range(self.layout.cameras):
            parts += [vs, vit_embeds[f].to(model.dtype), ve]
        parts.append(model.embed_ids(text_ids))
        zero = torch.zeros((), dtype=torch.float32, device=latents.device)
        parts += [vs, model.latent_embeds(latents, zero, self.latent_position_ids), ve]
        embeds = torch.cat(parts)  # [P, d]
        mask = prefix_mask(segment, causal)
        _, k, v = model.language_model.model(embeds, self.route, positions, None, None, mask)
        return k, v


class DecodeStepGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model = model

    def forward(self, token, k_cache, v_cache, key_valid, rope):
        """-> logits [1, V] fp32, k_new/v_new [L, 1, KV, D] (the caller writes them back)."""
        return self.model.text_logits(token, k_cache, v_cache, key_valid, rope)


class SubgoalStepGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model = model
        lh, lw = shapes.layout.latent_grid
        pos = grid_position_ids(lh, lw, model.cfg.max_latent_size)
        self.register_buffer('position_ids', pos, persistent=False)

    def forward(self, x_t, t, k, v, key_valid, rope):
        return self.model.latent_velocity(x_t, t, self.position_ids, k, v, key_valid, rope)


class ActionStepGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t, t, k, v, key_valid, rope):
        return self.model.action_velocity(x_t, t, k, v, key_valid, rope)


class ActionStepRtcGraph(nn.Module):
    """One guided real-time-chunking step in one graph: the velocity and its vector-Jacobian
    product through the action expert against the cached prefix (one forward, one backward),
    combined as `runtime.guidance.RtcGuidance` does:

        x0_hat = x_t - t v,  e = w * (target - x0_hat),  g = (d x0_hat / d x_t)^T e
        velocity = v - guidance * g

    `guidance` is lambda(t), clipped (computed by the caller). For backends without autograd."""

    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t, t, k, v, key_valid, rope, target, weights, guidance):
        def velocity(x: Tensor) -> Tensor:
            return self.model.action_velocity(x, t, k, v, key_valid, rope)

        vel, pullback = torch.func.vjp(velocity, x_t)  # [K, A]
        rows_t = t[:, None]  # [K, 1]
        error = weights[:, None] * (target - (x_t - rows_t * vel))
        (jv_t_e,) = pullback(rows_t * error)  # J_v^T (t * e)
        return vel - guidance * (error - jv_t_e)


class VaeDecodeGraph(nn.Module):
    def __init__(self, model: HaloModel, shapes: GraphShapes) -> None:
        super().__init__()
        self.model, self.grid = model, shapes.layout.latent_grid

    def forward(self, latents: Tensor) -> Tensor:
        return decode_latent_image(self.model, latents, self.grid)


GRAPHS: dict[str, tuple[type[nn.Module], tuple[str, ...], tuple[str, ...]]] = {
    'vit': (VitGraph, ('patches',), ('vit_embeds',)),
    'prefill': (
        PrefillGraph,
        ('vit_embeds', 'text_ids', 'latents', 'segment', 'causal', 'positions'),
        ('k', 'v'),
    ),
    'decode_step': (
        DecodeStepGraph,
        ('token', 'k_cache', 'v_cache', 'key_valid', 'rope'),
        ('logits', 'k_new', 'v_new'),
    ),
    'subgoal_step': (
        SubgoalStepGraph,
        ('x_t', 't', 'k', 'v', 'key_valid', 'rope'),
        ('velocity',),
    ),
    'action_step': (ActionStepGraph, ('x_t', 't', 'k', 'v', 'key_valid', 'rope'), ('velocity',)),
    RTC_GRAPH: (
        ActionStepRtcGraph,
        ('x_t', 't', 'k', 'v', 'key_valid', 'rope', 'target', 'weights', 'guidance'),
        ('velocity',),
    ),
    'vae_decode': (VaeDecodeGraph, ('latents',), ('image',)),
}


def build_graph(name: str, model: HaloModel, shapes: GraphShapes) -> nn.Module:
    if name not in GRAPHS:
        raise KeyError(f'unknown graph {name!r}; graphs: {sorted(GRAPHS)}')
    return GRAPHS[name][0](model, shapes).eval()


def example_inputs(
    name: str,
    model: HaloModel,
    shapes: GraphShapes,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> dict[str, Tensor]:
    """Fresh random inputs of the right shapes and dtypes (export, parity tests, benchmarks).

    K/V come in the model's dtype; flow states and times in fp32; masks describe a prefix that
    fills part of the layout so padding is exercised.
    """
    cfg, layout = model.cfg, shapes.layout
    gen = torch.Generator().manual_seed(seed)
    device = device or next(model.parameters()).device
    dtype = dtype or model.dtype  # of K/V and ViT embeddings
    llm = cfg.llm

    def randn(*shape, dt=torch.float32):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dt)

    def kv(rows):
        shape = (llm.num_layers, rows, llm.num_kv_heads, llm.head_dim)
        return randn(*shape, dt=dtype), randn(*shape, dt=dtype)

    def valid(rows):
        used = int(torch.randint(rows // 3, rows, (), generator=gen))
        return (torch.arange(rows) < used).to(device), torch.tensor(used + 3, device=device)

    t = torch.rand((), generator=gen).to(device)
    if name == 'vit':
        p = cfg.vit.patch_size
        return {'patches': randn(layout.cameras, layout.vit_tokens, 3 * p * p).clamp(-1, 1)}
    if name == 'prefill':
        st = cfg.special_tokens
        n_text = int(torch.randint(4, layout.text_capacity // 2, (), generator=gen))
        texts = [torch.randint(0, st.im_start, (n,), generator=gen).tolist() for n in (n_text, 7)]
        feed = assemble(layout, texts, im_start=st.im_start, im_end=st.im_end, latents=True)
        return {
            'vit_embeds': randn(layout.cameras, layout.vit_tokens, llm.hidden_size, dt=dtype),
            'text_ids': torch.from_numpy(feed.text_ids).to(device),
            'latents': randn(layout.latent_tokens, cfg.patch_latent_dim),
            'segment': torch.from_numpy(feed.segment).to(device),
            'causal': torch.from_numpy(feed.causal).to(device),
            'positions': torch.from_numpy(feed.positions).to(device),
        }
    if name == 'decode_step':
        k, v = kv(layout.decode_rows)
        key_valid, rope = valid(layout.decode_rows)
        token = torch.randint(0, llm.vocab_size, (1,), generator=gen).to(device)
        return {'token': token, 'k_cache': k, 'v_cache': v, 'key_valid': key_valid, 'rope': rope}
    if name in ('subgoal_step', 'action_step', RTC_GRAPH):
        k, v = kv(layout.prefix_rows)
        key_valid, rope = valid(layout.prefix_rows)
        if name == 'subgoal_step':
            x = randn(layout.latent_tokens, cfg.patch_latent_dim)
        else:
            x = randn(shapes.chunk_length, cfg.action_dim)
            t = t.expand(shapes.chunk_length).clone()
            t[: shapes.chunk_length // 5] = 0.0  # a clean prefix
        feeds = {'x_t': x, 't': t, 'k': k, 'v': v, 'key_valid': key_valid, 'rope': rope}
        if name == RTC_GRAPH:
            feeds['target'] = randn(shapes.chunk_length, cfg.action_dim)
            feeds['weights'] = torch.rand(shapes.chunk_length, generator=gen).to(device)
            feeds['guidance'] = torch.tensor(3.0, device=device)
        return feeds
    if name == 'vae_decode':
        return {'latents': randn(layout.latent_tokens, cfg.patch_latent_dim)}
    raise KeyError(f'unknown graph {name!r}; graphs: {sorted(GRAPHS)}')
