"""The HALO network: BAGEL's Mixture-of-Transformers with a third (action) expert.

Top-level attribute names equal the released `Bagel` module (the checkpoint key prefixes);
the FLUX VAE hangs under `vae.` here and is saved to its own file without that prefix.

Every forward runs a *block* of new rows against a cached prefix. A block is one segment of the
released layout: `[<|im_start|> text <|im_end|>]` (causal, RoPE +1 per token),
`[<|vision_start|> ViT or VAE tokens <|vision_end|>]` or `[<|action_start|> actions
<|action_end|>]` (bidirectional, one shared RoPE id). Framing tokens always use the und expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from halo_ros.model.backbone import Expert, LanguageModel, Route
from halo_ros.model.config import HaloConfig
from halo_ros.model.embed import (
    MLPConnector,
    PositionEmbedding,
    TimestepEmbedder,
    chunk_index_sinusoid,
    grid_position_ids,
)
from halo_ros.model.layers import RMSNorm
from halo_ros.model.vae import AutoEncoder
from halo_ros.model.vit import SiglipVisionModel, patchify

U, G, A = Expert.UND, Expert.GEN, Expert.ACT


@dataclass(frozen=True)
class Block:
    """New rows to run: embeds [n, d], expert runs, RoPE offsets [n] from the block start."""

    embeds: Tensor
    route: Route
    rope_offsets: Tensor
    causal: bool
    rope_advance: int  # how far the block moves next_rope once it is in the cache


def framed_route(n_payload: int, expert: Expert) -> Route:
    """[start] + payload + [end]: framing tokens through und, payload through `expert`."""
    return ((U, 0, 1), (expert, 1, n_payload + 1), (U, n_payload + 1, n_payload + 2))


def block_mask(n: int, causal: bool, key_valid: Tensor) -> Tensor:
    """Rows of a block see every valid prefix key and the block (lower triangle if causal)
    -> bool [n, P + n]."""
    own = torch.ones(n, n, dtype=torch.bool, device=key_valid.device)
    if causal:
        own = own.tril()
    return torch.cat([key_valid[None, :].expand(n, -1), own], dim=1)


class HaloModel(nn.Module):
    def __init__(self, cfg: HaloConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.llm.hidden_size
        self.language_model = LanguageModel(cfg.llm)
        self.time_embedder = TimestepEmbedder(d, cfg.timestep_freq_dim)
        self.vae2llm = nn.Linear(cfg.patch_latent_dim, d)
        self.llm2vae = nn.Linear(d, cfg.patch_latent_dim)
        self.latent_pos_embed = PositionEmbedding(cfg.max_latent_size, d)
        self.vit_model = SiglipVisionModel(cfg.vit)
        self.connector = MLPConnector(cfg.vit.hidden_size, d)
        self.vit_pos_embed = PositionEmbedding(cfg.vit.max_patches_per_side, d)
        self.action_time_embedder = TimestepEmbedder(d, cfg.timestep_freq_dim)
        self.input_linear_layer = nn.Linear(cfg.action_dim, d)
        self.output_linear_layer = nn.Linear(d, cfg.action_dim)
        self.vae = AutoEncoder(cfg.vae)

    # ---- initialisation -------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """HF-style init: N(0, std) weights, zero biases, unit norms; the two output heads are
        zero as in the release (a fresh model predicts zero velocity)."""
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding | nn.Conv2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if getattr(module, 'bias', None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm | nn.LayerNorm | nn.GroupNorm):
                module.weight.fill_(1.0)
                if getattr(module, 'bias', None) is not None:
                    module.bias.zero_()
        for head in (self.llm2vae, self.output_linear_layer):
            head.weight.zero_()
            head.bias.zero_()

    @torch.no_grad()
    def init_experts_from_und(self) -> None:
        """Copy every und tensor into its `_moe_gen` / `_moe_act` twin (released `init_moe`,
        used when training starts from a text-only Qwen2.5); a narrower twin takes a slice."""
        params = dict(self.language_model.named_parameters())
        for name, target in params.items():
            for suffix in ('_moe_gen', '_moe_act'):
                source = params.get(name.replace(suffix, '')) if suffix in name else None
                if source is not None:
                    shapes = zip(target.shape, source.shape, strict=True)
                    region = tuple(slice(0, min(a, b)) for a, b in shapes)
                    target[region].copy_(source[region])

    # ---- embeddings -----------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.input_linear_layer.weight.dtype

    def embed_ids(self, ids: Tensor) -> Tensor:
        return self.language_model.model.embed_tokens(ids)

    def _framing(self, start: int, end: int) -> tuple[Tensor, Tensor]:
        """Embeddings [1, d] of a block's start and end tokens (static slices: export-friendly)."""
        table = self.language_model.model.embed_tokens.weight  # [V, d]
        return table[start : start + 1], table[end : end + 1]

    def text_block(self, ids: Tensor) -> Block:
        """Already-framed token ids [n] -> causal und block."""
        n = ids.shape[0]
        return Block(self.embed_ids(ids), ((U, 0, n),), torch.arange(n, device=ids.device), True, n)

    def vit_tokens(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised image [3, H, W] (H, W multiples of the patch) -> (patches [T, p*p*3],
        position ids [T])."""
        p = self.cfg.vit.patch_size
        _, h, w = image.shape
        if h % p or w % p:
            raise ValueError(f'ViT image size {h}x{w} is not a multiple of patch {p}')
        pos = grid_position_ids(h // p, w // p, self.cfg.vit.max_patches_per_side)
        return patchify(image, p), pos.to(image.device)

    def vit_embeds(self, patches: Tensor, position_ids: Tensor, seqlens: list[int]) -> Tensor:
        """Packed patches [T, p*p*3] -> LLM inputs [T, d]: connector(ViT) + position table."""
        x = self.vit_model(patches.to(self.dtype), position_ids, seqlens)  # [T, vit_d]
        return self.connector(x) + self.vit_pos_embed(position_ids)

    def vit_block(self, image: Tensor) -> Block:
        patches, pos = self.vit_tokens(image)
        return self.framed_vit_block(self.vit_embeds(patches, pos, [patches.shape[0]]))

    def framed_vit_block(self, vit_embeds: Tensor) -> Block:
        """One image's ViT embeddings [T, d] -> [vs] + tokens + [ve], one shared RoPE id."""
        t = vit_embeds.shape[0]
        st = self.cfg.special_tokens
        start, end = self._framing(st.vision_start, st.vision_end)
        embeds = torch.cat([start, vit_embeds, end])  # [T+2, d]
        return Block(
            embeds,
            ((U, 0, t + 2),),
            torch.zeros(t + 2, dtype=torch.long, device=vit_embeds.device),
            False,
            1,
        )

    def latent_grid(self, height_px: int, width_px: int) -> tuple[int, int]:
        ld = self.cfg.latent_downsample
        h, w = height_px // ld, width_px // ld
        if h <= 0 or w <= 0 or max(h, w) > self.cfg.max_latent_size:
            raise ValueError(
                f'image {height_px}x{width_px} px gives a latent grid {h}x{w} '
                f'outside 1..max_latent_size {self.cfg.max_latent_size}'
            )
        return h, w

    def latent_embeds(self, x: Tensor, t: Tensor, position_ids: Tensor) -> Tensor:
        """Latent tokens [T, 64], t [] -> [T, d]: vae2llm + time embedding + position table."""
        n = x.shape[0]
        time = self.time_embedder(t.reshape(1).expand(n))  # [T, d]
        return self.vae2llm(x.to(self.dtype)) + time + self.latent_pos_embed(position_ids)

    def latent_block(self, x: Tensor, t: Tensor, position_ids: Tensor, clean: bool) -> Block:
        """[vs] + latent tokens + [ve]; a clean block (t = 0) advances RoPE, a noisy one not."""
        n = x.shape[0]
        st = self.cfg.special_tokens
        start, end = self._framing(st.vision_start, st.vision_end)
        embeds = torch.cat([start, self.latent_embeds(x, t, position_ids), end])
        return Block(
            embeds,
            framed_route(n, G),
            torch.zeros(n + 2, dtype=torch.long, device=x.device),
            False,
            int(clean),
        )

    def action_embeds(self, x: Tensor, t: Tensor) -> Tensor:
        """Actions [K, 14], t [] or per token [K] -> [K, d]: input proj + time embedding +
        chunk-index sinusoid. Per-token times let a clean prefix (t = 0) sit beside noisy rows
        (training-time real-time chunking)."""
        k = x.shape[0]
        time = self.action_time_embedder(t.reshape(-1).expand(k))  # [K, d]
        index = chunk_index_sinusoid(torch.arange(k, device=x.device), self.cfg.llm.hidden_size)
        return self.input_linear_layer(x.to(self.dtype)) + time + index.to(self.dtype)

    def action_block(self, x: Tensor, t: Tensor) -> Block:
        k = x.shape[0]
        st = self.cfg.special_tokens
        start, end = self._framing(st.action_start, st.action_end)
        embeds = torch.cat([start, self.action_embeds(x, t), end])  # [K+2, d]
        return Block(
            embeds,
            framed_route(k, A),
            torch.zeros(k + 2, dtype=torch.long, device=x.device),
            False,
            0,
        )

    # ---- running blocks -------------------------------------------------------------------

    def run_block(
        self,
        block: Block,
        past_k: Tensor | None,
        past_v: Tensor | None,
        key_valid: Tensor,
        rope_start: Tensor | int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> (final-normed hidden [n, d], k, v [L, n, KV, D] of the block's rows)."""
        n = block.embeds.shape[0]
        positions = block.rope_offsets + rope_start  # [n]
        mask = block_mask(n, block.causal, key_valid)  # [n, P + n]
        return self.language_model.model(block.embeds, block.route, positions, past_k, past_v, mask)

    def action_velocity(
        self,
        x_t: Tensor,
        t: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        key_valid: Tensor,
        rope_id: Tensor,
    ) -> Tensor:
        """One action flow evaluation against the prefix, which it does not modify.

        x_t [K, A] fp32, t [] or [K] fp32, past_k/v [L, P, KV, D], key_valid [P] bool,
        rope_id [] long -> velocity [K, A] fp32 (= noise - x0 in HALO's convention). Static
        shapes, no data-dependent control flow: exportable as one graph.
        """
        h, _, _ = self.run_block(self.action_block(x_t, t), past_k, past_v, key_valid, rope_id)
        return self.output_linear_layer(h[1:-1]).float()  # payload rows only

    def latent_velocity(
        self,
        x_t: Tensor,
        t: Tensor,
        position_ids: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        key_valid: Tensor,
        rope_id: Tensor,
    ) -> Tensor:
        """One subgoal-image flow evaluation: x_t [T, 64] fp32, position_ids [T] -> v [T, 64]."""
        block = self.latent_block(x_t, t, position_ids, clean=False)
        h, _, _ = self.run_block(block, past_k, past_v, key_valid, rope_id)
        return self.llm2vae(h[1:-1]).float()

    def text_logits(
        self, ids: Tensor, past_k: Tensor, past_v: Tensor, key_valid: Tensor, rope_id: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Causal und step: ids [n] -> (logits [n, V] fp32, k, v [L, n, KV, D])."""
        block = Block(
            self.embed_ids(ids),
            ((U, 0, ids.shape[0]),),
            torch.arange(ids.shape[0], device=ids.device),
            True,
            ids.shape[0],
        )
        h, k, v = self.run_block(block, past_k, past_v, key_valid, rope_id)
        return self.language_model.lm_head(h).float(), k, v

    # ---- the inference API (implemented in halo_ros.model.inference) ------------------------

    def prefill(self, segments, cache=None):
        """Append segments to a KV cache -> new KVCache. See `inference.prefill`."""
        from halo_ros.model import inference

        return inference.prefill(self, segments, cache)

    def decode_text(self, cache, max_new_tokens, **kwargs):
        """Greedy / temperature decoding from <|im_start|>. See `inference.decode_text`."""
        from halo_ros.model import inference

        return inference.decode_text(self, cache, max_new_tokens, **kwargs)

    def sample_subgoal(self, cache, grid_hw, noise, **kwargs):
        """Subgoal latent tokens by flow sampling. See `inference.sample_subgoal`."""
        from halo_ros.model import inference

        return inference.sample_subgoal(self, cache, grid_hw, noise, **kwargs)

    def sample_actions(self, cache, noise, **kwargs):
        """An action chunk by flow sampling. See `inference.sample_actions`."""
        from halo_ros.model import inference

        return inference.sample_actions(self, cache, noise, **kwargs)
