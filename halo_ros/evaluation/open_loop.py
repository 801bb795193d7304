"""Open-loop check on recorded demonstrations: does the chunk follow them, and does it look
where the object is?

At fixed times of each episode the engine gets the recorded frames, reasons on them as the
policy does, and samples a chunk with the demonstrated action of that tick as its executed prefix
(as the actor gives the action executing at observation time). Its error against the
demonstrated next chunk is set against the camera-blind baseline: the mean of the demonstrations'
chunks at that tick, the best a policy that ignores where the object lies can do. A policy near
the baseline at the start of an episode reaches for the average object position in closed loop,
whatever its training loss says; this shows it in a minute instead of a 10-minute evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

# The six joints of each arm in the 14-vector (grippers left out: they do not say where to go).
ARM_SLICES = {'left': slice(0, 6), 'right': slice(7, 13)}


@dataclass(frozen=True)
class TickFit:
    """How the chunks sampled at one episode time compare with the demonstrations'."""

    tick: int
    arm: str
    episodes: int
    model_error_rad: float  # mean |chunk - demonstrated chunk| over the chunk and the six joints
    blind_error_rad: float  # the same for the mean demonstrated chunk at this tick
    model_spread_rad: float  # across episodes, std of the chunk's last point (joint mean)
    demo_spread_rad: float  # the same for the demonstrations: what there is to follow
    end_correlation: float  # across episodes, chunk end vs demonstrated end (mean over joints)

    @property
    def explained(self) -> float:
        """1 - model / blind error: 0 = no better than ignoring the cameras, 1 = exact."""
        return 1.0 - self.model_error_rad / self.blind_error_rad if self.blind_error_rad else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {'explained': round(self.explained, 3)}


def _correlation(model: np.ndarray, demo: np.ndarray) -> float:
    """Mean Pearson correlation per column of (episodes, joints); 0 where either is constant."""
    m, d = model - model.mean(0), demo - demo.mean(0)
    norm = np.sqrt((m * m).sum(0) * (d * d).sum(0))
    r = np.divide((m * d).sum(0), norm, out=np.zeros(m.shape[1]), where=norm > 1e-12)
    return float(r.mean())


def open_loop_fit(chunks: dict[int, np.ndarray], demos: dict[int, np.ndarray]) -> list[TickFit]:
    """Per tick and arm, from (episodes, K, 14) sampled and demonstrated chunks at that tick."""
    fits = []
    for tick in sorted(chunks):
        model, demo = chunks[tick], demos[tick]
        if model.shape != demo.shape or model.ndim != 3:
            raise ValueError(f'tick {tick}: chunks {model.shape} and demos {demo.shape} disagree')
        blind = demo.mean(axis=0, keepdims=True)
        for arm, joints in ARM_SLICES.items():
            fits.append(
                TickFit(
                    tick=tick,
                    arm=arm,
                    episodes=len(model),
                    model_error_rad=float(np.abs(model - demo)[..., joints].mean()),
                    blind_error_rad=float(np.abs(blind - demo)[..., joints].mean()),
                    model_spread_rad=float(model[:, -1, joints].std(axis=0).mean()),
                    demo_spread_rad=float(demo[:, -1, joints].std(axis=0).mean()),
                    end_correlation=_correlation(model[:, -1, joints], demo[:, -1, joints]),
                )
            )
    return fits


SUBGOALS = ('own', 'true', 'none')


def sample_chunks(
    engine,
    settings,
    episodes: Sequence,
    ticks: Sequence[int],
    seed: int = 0,
    subgoal: str = 'own',
    on_reasoning=None,
):
    """(chunks, demos): per tick, (episodes, K, 14) chunks the engine samples on the recorded
    frames, and the demonstrated chunks from that tick (padded with the last action, as training
    pads). Episodes shorter than a tick are left out of it.

    `subgoal`: the chunk conditions on the model's own imagined subgoal (`own`, as the node), on
    the demonstration's goal image of that subtask encoded by the checkpoint's autoencoder
    (`true`, as training feeds it), or on none. `on_reasoning(episode, tick, reasoning)` sees
    each reasoning (where the model says the object is, `grounding_fit`)."""
    from halo_ros.engine.interface import Observation
    from halo_ros.runtime.seam import plan_seam
    from halo_ros.training.data import chunk_at, decode_frame

    info, actor = engine.info, settings.policy.actor
    instruction = settings.values['instruction']
    if subgoal not in SUBGOALS:
        raise ValueError(f'subgoal {subgoal!r} is not one of {SUBGOALS}')
    true_goal = _goal_encoder(settings) if subgoal == 'true' else None
    rng = np.random.default_rng(seed)
    chunks: dict[int, list] = {t: [] for t in ticks}
    demos: dict[int, list] = {t: [] for t in ticks}
    for episode in episodes:
        for t in ticks:
            if t >= episode.length:
                continue
            images = {cam: decode_frame(episode.frames[cam][t]) for cam in info.cameras}
            shapes = {img.shape[:2] for img in images.values()}
            if shapes != {tuple(info.image_hw)}:
                raise ValueError(
                    f'{episode.folder}: recorded frames are {sorted(shapes)}, the engine takes '
                    f'{tuple(info.image_hw)}; set image_height / image_width to the recording'
                )
            observation = Observation(t, images, episode.actions[t])
            reasoning = engine.reason(observation, instruction, 1, subgoal=subgoal == 'own')
            if on_reasoning is not None:
                on_reasoning(episode, t, reasoning)
            if true_goal is not None:
                tokens, grid = true_goal(episode.goals[int(episode.subtask[t])])
                reasoning = replace(reasoning, subgoal_tokens=tokens, subgoal_grid=grid)
            plan = plan_seam(actor.seam, episode.actions[t : t + 1], info.chunk_length, 1, 1)
            noise = rng.standard_normal((info.chunk_length, info.action_dim), dtype=np.float32)
            chunks[t].append(engine.act(observation, reasoning, noise, plan).actions)
            demos[t].append(chunk_at(episode.actions, t, info.chunk_length))
    kept = [t for t in ticks if chunks[t]]
    return (
        {t: np.stack(chunks[t]) for t in kept},
        {t: np.stack(demos[t]) for t in kept},
    )


@dataclass(frozen=True)
class GroundingFit:
    """Where the reasoning says the object is against where the annotation found it, at one
    episode time (hundredths of the grounding camera's width and height)."""

    tick: int
    episodes: int  # with an annotated position
    said: int  # of those, reasonings that gave a position
    error_x: float  # mean |x - annotated x| over the reasonings that gave one
    error_y: float
    blind_x: float  # mean |annotated x - their mean|: what saying the average position costs
    blind_y: float

    def to_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


def grounding_fit(pairs: dict[int, list[tuple[str, str]]]) -> list[GroundingFit]:
    """Per tick, from (annotated object text, reasoned object text) pairs."""
    from halo_ros.recording.grounding import parse_object_text

    fits = []
    for tick in sorted(pairs):
        truth, said = [], []
        for annotated, reasoned in pairs[tick]:
            a, r = parse_object_text(annotated), parse_object_text(reasoned)
            if a is None or a.xy is None:
                continue
            truth.append(a.xy)
            if r is not None and r.xy is not None:
                said.append((a.xy, r.xy))
        if not truth:
            continue
        t = np.array(truth) * 100
        err = (
            np.abs(np.array([(r[0] - a[0], r[1] - a[1]) for a, r in said]) * 100) if said else None
        )
        blind = np.abs(t - t.mean(0)).mean(0)
        fits.append(
            GroundingFit(
                tick,
                len(truth),
                len(said),
                float(err[:, 0].mean()) if err is not None else float('nan'),
                float(err[:, 1].mean()) if err is not None else float('nan'),
                float(blind[0]),
                float(blind[1]),
            )
        )
    return fits


def grounding_lines(fits: Sequence[GroundingFit], fps: float) -> list[str]:
    lines = [f'{"time":>6} | {"said":>7} | {"error x, y":>11} | {"blind x, y":>11}  (hundredths)']
    for f in fits:
        lines.append(
            f'{f.tick / fps:5.1f}s | {f.said:3d}/{f.episodes:<3d} | '
            f'{f.error_x:5.1f} {f.error_y:5.1f} | {f.blind_x:5.1f} {f.blind_y:5.1f}'
        )
    return lines


def _goal_encoder(settings):
    """goal frame -> (tokens, grid) as training gives them to the action expert: the goal
    encoded by the checkpoint's own autoencoder (the clean copy, no subgoal divisor)."""
    from halo_ros.engine.loading import build_model
    from halo_ros.model.inference import encode_image_latents
    from halo_ros.training.autoencoder import vae_input

    model, _, _ = build_model(settings.engine)

    def encode(rgb: np.ndarray):
        import torch

        with torch.no_grad():
            tokens, grid = encode_image_latents(model, vae_input(model, rgb))
        return tokens.float().cpu().numpy(), tuple(grid)

    return encode


def fit_lines(fits: Sequence[TickFit], fps: float) -> list[str]:
    lines = [
        f'{"time":>6} {"arm":>5} | {"chunk err":>9} {"blind err":>9} {"explained":>9} | '
        f'{"chunk spread":>12} {"demo spread":>11} {"end corr":>8}'
    ]
    for f in fits:
        lines.append(
            f'{f.tick / fps:5.1f}s {f.arm:>5} | {f.model_error_rad:9.3f} {f.blind_error_rad:9.3f} '
            f'{f.explained:9.0%} | {f.model_spread_rad:12.3f} {f.demo_spread_rad:11.3f} '
            f'{f.end_correlation:8.2f}'
        )
    return lines
