"""Mixture-of-Transformers decoder: every layer holds three full experts (und, gen, act).

Parameter names follow the released `Bagel.language_model` state dict exactly: the understanding
expert has no suffix, generation `_moe_gen`, action `_moe_act`, the suffix on the leaf module.
Tokens are routed to experts by contiguous row ranges (`Route`); all rows share one attention.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from halo_ros.model.config import LLMConfig
from halo_ros.model.layers import RMSNorm, SwiGLU, apply_rope, attend, rope_cos_sin


class Expert(enum.IntEnum):
    UND = 0  # text, ViT tokens and every framing special token
    GEN = 1  # VAE latent tokens
    ACT = 2  # action tokens


SUFFIX = {Expert.UND: '', Expert.GEN: '_moe_gen', Expert.ACT: '_moe_act'}

# A route is a tuple of (expert, start, stop) runs that tile the rows in order.
Route = tuple[tuple[Expert, int, int], ...]


def make_route(experts: Sequence[Expert]) -> Route:
    """Per-row experts -> contiguous runs."""
    runs: list[tuple[Expert, int, int]] = []
    for i, e in enumerate(experts):
        if runs and runs[-1][0] == e:
            runs[-1] = (e, runs[-1][1], i + 1)
        else:
            runs.append((Expert(e), i, i + 1))
    return tuple(runs)


def shift_route(route: Route, offset: int) -> Route:
    return tuple((e, s + offset, t + offset) for e, s, t in route)


@dataclass(frozen=True)
class GroupedRoute:
    """A route applied by gathering each expert's rows once: one call per expert instead of one
    per run. For packed training batches, whose dozens of runs would each be a module call."""

    rows: tuple[tuple[Expert, Tensor], ...]  # expert, its row indices (ascending)
    inverse: Tensor  # [N]: where each row sits in the experts' concatenated outputs

    @classmethod
    def of(cls, route: Route, device: torch.device | None = None) -> GroupedRoute:
        n = max(t for _, _, t in route)
        owner = torch.empty(n, dtype=torch.long)
        for e, s, t in route:
            owner[s:t] = int(e)
        rows = tuple(
            (e, (owner == int(e)).nonzero()[:, 0]) for e in Expert if bool((owner == int(e)).any())
        )
        order = torch.cat([idx for _, idx in rows])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n)
        return cls(tuple((e, idx.to(device)) for e, idx in rows), inverse.to(device))


def _routed(owner: nn.Module, name: str, x: Tensor, route: Route | GroupedRoute) -> Tensor:
    """Apply `owner.<name><suffix>` to each run of rows; x [N, ...] -> [N, ...]."""
    if isinstance(route, GroupedRoute):
        parts = [getattr(owner, name + SUFFIX[e])(x[idx]) for e, idx in route.rows]
        return torch.cat(parts, dim=0)[route.inverse]
    return torch.cat([getattr(owner, name + SUFFIX[e])(x[s:t]) for e, s, t in route], dim=0)


class MoTAttention(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        for suffix in SUFFIX.values():
            setattr(self, f'q_proj{suffix}', nn.Linear(d, cfg.num_heads * hd, bias=True))
            setattr(self, f'k_proj{suffix}', nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f'v_proj{suffix}', nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f'o_proj{suffix}', nn.Linear(cfg.num_heads * hd, d, bias=False))
            setattr(self, f'q_norm{suffix}', RMSNorm(hd, cfg.rms_norm_eps))
            setattr(self, f'k_norm{suffix}', RMSNorm(hd, cfg.rms_norm_eps))

    def qkv(self, x: Tensor, route: Route, cos: Tensor, sin: Tensor) -> tuple[Tensor, ...]:
        """x [N, d] -> q [N, H, D], k/v [N, KV, D]; q/k-norm per expert, then RoPE."""
        n = x.shape[0]
        q = _routed(self, 'q_proj', x, route).view(n, self.num_heads, self.head_dim)
        k = _routed(self, 'k_proj', x, route).view(n, self.num_kv_heads, self.head_dim)
        v = _routed(self, 'v_proj', x, route).view(n, self.num_kv_heads, self.head_dim)
        q = apply_rope(_routed(self, 'q_norm', q, route), cos, sin)
        k = apply_rope(_routed(self, 'k_norm', k, route), cos, sin)
        return q, k, v


class MoTLayer(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.self_attn = MoTAttention(cfg)
        widths = {
            Expert.UND: cfg.intermediate_size,
            Expert.GEN: cfg.intermediate_size,
            Expert.ACT: cfg.act_intermediate_size,
        }
        for e, suffix in SUFFIX.items():
            setattr(self, f'mlp{suffix}', SwiGLU(cfg.hidden_size, widths[e]))
            setattr(self, f'input_layernorm{suffix}', RMSNorm(cfg.hidden_size, cfg.rms_norm_eps))
            setattr(
                self,
                f'post_attention_layernorm{suffix}',
                RMSNorm(cfg.hidden_size, cfg.rms_norm_eps),
            )

    def forward(
        self,
        h: Tensor,
        route: Route,
        cos: Tensor,
        sin: Tensor,
        past_k: Tensor | None,
        past_v: Tensor | None,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h [N, d], past_k/v [P, KV, D] or None, mask [N, P + N] -> (h [N, d], k, v [N, KV, D])."""
        x = _routed(self, 'input_layernorm', h, route)
        q, k, v = self.self_attn.qkv(x, route, cos, sin)
        keys = k if past_k is None else torch.cat([past_k.to(k.dtype), k], dim=0)  # [P+N, KV, D]
        values = v if past_v is None else torch.cat([past_v.to(v.dtype), v], dim=0)
        a = attend(q, keys, values, mask)  # [N, H*D]
        h = h + _routed(self.self_attn, 'o_proj', a, route)
        x = _routed(self, 'post_attention_layernorm', h, route)
        h = h + _routed(self, 'mlp', x, route)
        return h, k, v


class DecoderModel(nn.Module):
    """`language_model.model`: embeddings, MoT layers, one final norm per expert."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([MoTLayer(cfg) for _ in range(cfg.num_layers)])
        for suffix in SUFFIX.values():
            setattr(self, f'norm{suffix}', RMSNorm(cfg.hidden_size, cfg.rms_norm_eps))

    def forward(
        self,
        h: Tensor,
        route: Route,
        positions: Tensor,
        past_k: Tensor | None,
        past_v: Tensor | None,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run all layers on new rows against a (possibly empty) cached prefix.

        h [N, d], positions [N] rope ids, past_k/v [L, P, KV, D] or None, mask [N, P + N] bool
        -> (final-normed hidden [N, d], new k [L, N, KV, D], new v [L, N, KV, D]).
        """
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(
                h,
                route,
                cos,
                sin,
                None if past_k is None else past_k[i],
                None if past_v is None else past_v[i],
                mask,
            )
            ks.append(k)
            vs.append(v)
        return _routed(self, 'norm', h, route), torch.stack(ks), torch.stack(vs)


class LanguageModel(nn.Module):
    """`language_model`: the decoder plus the untied `lm_head` shared by all experts."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.model = DecoderModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
