"""Training-style forward over one packed sample with the released mask rules and losses.

Layout rules (released `data/dataset_base.py`, `data/data_utils.py`):
- text split: causal inside, RoPE +1 per token; CE on next tokens.
- clean image split (ViT or VAE tokens at t = 0): full inside, one RoPE id, then RoPE +1.
- noisy split (image latents or actions with a loss): full inside, one RoPE id, RoPE unchanged,
  and its columns are hidden from every row outside it, so nothing sees the noise and a clean
  copy placed after it reuses its RoPE id without leaking the target into it.
Flow: t = sigmoid(N(0, 1)), x_t = (1 - t) x0 + t noise, target v = noise - x0; MSE for latents,
L1 for actions (never shifted).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from halo_ros.model.backbone import GroupedRoute, Route, shift_route
from halo_ros.model.embed import grid_position_ids
from halo_ros.model.halo import Block, HaloModel
from halo_ros.model.inference import prefix_times
from halo_ros.model.layers import BlockDiagonal, fused_attention


class SplitMode(enum.Enum):
    CAUSAL = 'causal'
    FULL = 'full'
    NOISE = 'noise'


@dataclass(frozen=True)
class TrainText:
    """Text wrapped as <|im_start|> ids [<|im_end|>]; CE on every next token if `loss`."""

    ids: tuple[int, ...]
    loss: bool = True
    close: bool = True  # append <|im_end|> (and predict it)
    # Weight of the first predicted token's CE (1 = uniform, as released). In a HALO thought it
    # is the first plan step, the current subtask: one decision that the ~30 template tokens
    # after it follow from, so a uniform mean gives it ~1/30 of the text gradient.
    lead_weight: float = 1.0
    # (first, end, weight): the CE weight of the tokens ids[first:end] (the grounded object's
    # position in a thought, where the object is: what the actions most need from the text).
    span_weight: tuple[int, int, float] | None = None


@dataclass(frozen=True)
class TrainViTImage:
    image: Tensor  # [3, H, W] normalised, multiples of the ViT patch


@dataclass(frozen=True)
class TrainLatentImage:
    """VAE latent tokens [h*w, 64]. noisy=True: a target with MSE loss at time t (sampled if
    None) and the given noise (sampled if None); noisy=False: a clean condition at t = 0."""

    tokens: Tensor
    grid_hw: tuple[int, int]
    noisy: bool = False
    t: float | None = None
    noise: Tensor | None = None


@dataclass(frozen=True)
class TrainActions:
    """An action chunk [K, A], a noisy target with L1 loss. The first `prefix` rows are given
    clean (flow time 0) and carry no loss: the executed prefix of training-time real-time
    chunking, which the model learns to continue."""

    actions: Tensor
    t: float | None = None
    noise: Tensor | None = None
    prefix: int = 0


TrainItem = TrainText | TrainViTImage | TrainLatentImage | TrainActions


@dataclass
class TrainOutput:
    ce: Tensor | None
    mse: Tensor | None
    l1: Tensor | None
    hidden: Tensor  # [N, d] final-normed rows of the whole sample
    spans: list[tuple[int, int]] = field(default_factory=list)  # rows of each item
    predictions: dict[int, Tensor] = field(default_factory=dict)  # item -> logits or velocity
    inputs: dict[int, Tensor] = field(default_factory=dict)  # item -> x_t of noisy items
    span_ce: Tensor | None = None  # unweighted CE over the weighted spans (what they cost now)

    def total(
        self, ce_weight: float = 1.0, mse_weight: float = 1.0, l1_weight: float = 1.0
    ) -> Tensor:
        terms = [
            w * x
            for w, x in ((ce_weight, self.ce), (mse_weight, self.mse), (l1_weight, self.l1))
            if x is not None
        ]
        return torch.stack(terms).sum()


def training_mask(split_lens: Sequence[int], modes: Sequence[SplitMode]) -> Tensor:
    """Released `prepare_attention_mask_per_sample` as bool [N, N] (True = may attend)."""
    n = sum(split_lens)
    mask = torch.zeros(n, n, dtype=torch.bool)
    start = 0
    for size, mode in zip(split_lens, modes, strict=True):
        own = torch.ones(size, size, dtype=torch.bool)
        mask[start : start + size, start : start + size] = (
            own.tril() if mode is SplitMode.CAUSAL else own
        )
        mask[start : start + size, :start] = True
        start += size
    start = 0
    for size, mode in zip(split_lens, modes, strict=True):
        if mode is SplitMode.NOISE:
            mask[:, start : start + size] = False
            mask[start : start + size, start : start + size] = True
        start += size
    return mask


def _flow_time(t: float | None, generator: torch.Generator | None) -> Tensor:
    if t is not None:
        return torch.tensor(float(t))
    return torch.sigmoid(torch.randn((), generator=generator))  # logit-normal


def forward_train(
    model: HaloModel, items: Sequence[TrainItem], *, generator: torch.Generator | None = None
) -> TrainOutput:
    """One packed sample through the full model (no cache) -> losses and per-item outputs."""
    return forward_train_batch(model, [items], generator=generator)[0]


@dataclass
class _Laid:
    """One sample laid out as blocks, with what its losses need."""

    blocks: list[Block] = field(default_factory=list)
    modes: list[SplitMode] = field(default_factory=list)
    targets: dict[int, tuple[str, Tensor]] = field(default_factory=dict)
    inputs: dict[int, Tensor] = field(default_factory=dict)
    loss_rows: dict[int, int] = field(default_factory=dict)  # actions: rows before carry no loss
    ce_weights: dict[int, Tensor] = field(default_factory=dict)  # text: per-token CE weights
    spans_of: dict[int, tuple[int, int]] = field(default_factory=dict)  # text: weighted span


def forward_train_batch(
    model: HaloModel,
    batch: Sequence[Sequence[TrainItem]],
    *,
    generator: torch.Generator | None = None,
) -> list[TrainOutput]:
    """Samples through the full model in one pass -> one TrainOutput per sample, each exactly
    what `forward_train` gives it alone. The samples' rows are packed: every image through the
    ViT at once, each expert's rows through its weights at once (`GroupedRoute`); attention
    stays within each sample (`BlockDiagonal`). On a CPU that is several times fewer module calls
    than a sample at a time, for the same arithmetic."""
    device = model.input_linear_layer.weight.device
    images = [item.image for items in batch for item in items if isinstance(item, TrainViTImage)]
    vit = iter(_vit_embeds(model, images, device))
    laid = [_lay_out(model, items, vit, generator, device) for items in batch]

    embeds, route, positions, masks, sample_rows = [], [], [], [], []
    offset = 0
    for sample in laid:
        rope, spans, start = 0, [], 0
        for block in sample.blocks:
            n = block.embeds.shape[0]
            route.extend(shift_route(block.route, offset + start))
            positions.append(block.rope_offsets + rope)
            spans.append((start, start + n))
            rope += block.rope_advance
            start += n
        embeds += [b.embeds for b in sample.blocks]
        mask = training_mask([e - s for s, e in spans], sample.modes).to(device)
        masks.append((offset, offset + start, mask))
        sample_rows.append((offset, spans))
        offset += start
    merged = _merge(tuple(route))
    if len(laid) == 1:
        routing, attention = merged, masks[0][2]
    else:
        routing, attention = GroupedRoute.of(merged, device), BlockDiagonal(tuple(masks))
    with fused_attention():  # every row sees itself: no all-masked rows
        hidden, _, _ = model.language_model.model(
            torch.cat(embeds), routing, torch.cat(positions), None, None, attention
        )
    return [
        _losses(model, sample, hidden[o : o + spans[-1][1]], spans)
        for sample, (o, spans) in zip(laid, sample_rows, strict=True)
    ]


def _vit_embeds(model: HaloModel, images: list[Tensor], device) -> list[Tensor]:
    """Every image's ViT + connector embeddings [T_i, d], computed in one packed call."""
    if not images:
        return []
    tokens = [model.vit_tokens(image.to(device)) for image in images]
    seqlens = [patches.shape[0] for patches, _ in tokens]
    packed = model.vit_embeds(
        torch.cat([p for p, _ in tokens]), torch.cat([q for _, q in tokens]), seqlens
    )
    return list(packed.split(seqlens))


def _lay_out(model: HaloModel, items, vit, generator, device) -> _Laid:
    st = model.cfg.special_tokens
    out = _Laid()
    for i, item in enumerate(items):
        if isinstance(item, TrainText):
            ids = [st.im_start, *item.ids] + ([st.im_end] if item.close else [])
            ids_t = torch.tensor(ids, device=device)
            out.blocks.append(model.text_block(ids_t))
            out.modes.append(SplitMode.CAUSAL)
            if item.loss:
                out.targets[i] = ('ce', ids_t[1:])
                weights = torch.ones(len(ids) - 1, device=device)
                if item.span_weight is not None:  # target k predicts item.ids[k]
                    first, end, w = item.span_weight
                    weights[first:end] = w
                    out.spans_of[i] = (first, end)
                weights[0] = item.lead_weight
                out.ce_weights[i] = weights
        elif isinstance(item, TrainViTImage):
            out.blocks.append(model.framed_vit_block(next(vit)))
            out.modes.append(SplitMode.FULL)
        elif isinstance(item, TrainLatentImage):
            h, w = item.grid_hw
            pos = grid_position_ids(h, w, model.cfg.max_latent_size).to(device)
            x0 = item.tokens.to(device).float()
            if item.noisy:
                t = _flow_time(item.t, generator).to(device)
                noise = (
                    item.noise
                    if item.noise is not None
                    else torch.randn(x0.shape, generator=generator)
                )
                noise = noise.to(device).float()
                x_t = (1 - t) * x0 + t * noise
                out.blocks.append(model.latent_block(x_t, t, pos, clean=False))
                out.modes.append(SplitMode.NOISE)
                out.targets[i], out.inputs[i] = ('mse', noise - x0), x_t
            else:
                zero = torch.zeros((), device=device)
                out.blocks.append(model.latent_block(x0, zero, pos, clean=True))
                out.modes.append(SplitMode.FULL)
        elif isinstance(item, TrainActions):
            x0 = item.actions.to(device).float()
            t = _flow_time(item.t, generator).to(device)
            noise = (
                item.noise if item.noise is not None else torch.randn(x0.shape, generator=generator)
            )
            noise = noise.to(device).float()
            if not 0 <= item.prefix < x0.shape[0]:
                raise ValueError(f'TrainActions.prefix {item.prefix} outside 0..{x0.shape[0] - 1}')
            t = prefix_times(t, x0.shape[0], item.prefix)[:, None]  # [K, 1]
            x_t = (1 - t) * x0 + t * noise
            out.blocks.append(model.action_block(x_t, t[:, 0]))
            out.modes.append(SplitMode.NOISE)
            out.targets[i], out.inputs[i] = ('l1', noise - x0), x_t
            out.loss_rows[i] = item.prefix
        else:
            raise TypeError(f'forward_train: unknown item type {type(item).__name__}')
    return out


def _losses(model: HaloModel, laid: _Laid, hidden: Tensor, spans) -> TrainOutput:
    losses: dict[str, list[Tensor]] = {'ce': [], 'mse': [], 'l1': [], 'span': []}
    predictions: dict[int, Tensor] = {}
    for i, (kind, target) in laid.targets.items():
        s, e = spans[i]
        if kind == 'ce':
            logits = model.language_model.lm_head(hidden[s : e - 1]).float()  # next-token rows
            predictions[i] = logits
            w = laid.ce_weights[i]
            ce = F.cross_entropy(logits, target, reduction='none')
            losses['ce'].append(ce * (w * len(w) / w.sum()))  # a weighted mean per text
            if i in laid.spans_of:
                losses['span'].append(ce[slice(*laid.spans_of[i])].detach())
        elif kind == 'mse':
            pred = model.llm2vae(hidden[s + 1 : e - 1]).float()
            predictions[i] = pred
            losses['mse'].append(((pred - target) ** 2).flatten())
        else:
            pred = model.output_linear_layer(hidden[s + 1 : e - 1]).float()
            predictions[i] = pred
            losses['l1'].append((pred - target)[laid.loss_rows[i] :].abs().flatten())

    def mean(parts: list[Tensor]) -> Tensor | None:
        return torch.cat(parts).mean() if parts else None

    return TrainOutput(
        mean(losses['ce']),
        mean(losses['mse']),
        mean(losses['l1']),
        hidden,
        spans,
        predictions,
        laid.inputs,
        mean(losses['span']),
    )


def _merge(route: Route) -> Route:
    """Join adjacent runs of the same expert (fewer, larger matmuls)."""
    out: list[tuple] = []
    for e, s, t in route:
        if out and out[-1][0] == e and out[-1][2] == s:
            out[-1] = (e, out[-1][1], t)
        else:
            out.append((e, s, t))
    return tuple(out)
