"""Tokenizer: a Qwen2.5 `tokenizer.json` (or the small halo-tiny one) plus HALO's special tokens.

The release calls `add_special_tokens`, which adds any of <|im_start|>, <|im_end|>,
<|vision_start|>, <|vision_end|>, <|action_start|>, <|action_end|> the tokenizer lacks (for
Qwen2.5 the two action tokens, ids 151665/151666). We do the same and check the ids against the
model config.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from halo_ros.model.config import HaloConfig, SpecialTokens

logger = logging.getLogger(__name__)

SPECIAL_STRINGS = {
    'im_start': '<|im_start|>',
    'im_end': '<|im_end|>',
    'vision_start': '<|vision_start|>',
    'vision_end': '<|vision_end|>',
    'action_start': '<|action_start|>',
    'action_end': '<|action_end|>',
}


class HaloTokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        missing = [s for s in SPECIAL_STRINGS.values() if tokenizer.token_to_id(s) is None]
        if missing:
            # Same order as the release's add_special_tokens, so ids come out the same.
            tokenizer.add_tokens([AddedToken(s, special=False, normalized=False) for s in missing])
            logger.info('added tokens %s', missing)
        self.special = SpecialTokens(
            **{k: tokenizer.token_to_id(s) for k, s in SPECIAL_STRINGS.items()}
        )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def check(self, cfg: HaloConfig) -> None:
        """Raise if the special-token ids or the vocabulary do not fit the model config."""
        ours, theirs = dataclasses.asdict(self.special), dataclasses.asdict(cfg.special_tokens)
        wrong = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        if wrong:
            raise ValueError(
                f'tokenizer special ids differ from config {cfg.name} (tokenizer, config): {wrong}'
            )
        if self.vocab_size > cfg.llm.vocab_size:
            raise ValueError(
                f'tokenizer vocabulary {self.vocab_size} exceeds '
                f'{cfg.name} vocab_size {cfg.llm.vocab_size}'
            )


def load_tokenizer(directory: str | Path) -> HaloTokenizer:
    path = Path(directory) / 'tokenizer.json'
    if not path.is_file():
        raise FileNotFoundError(f'no tokenizer.json in {directory}')
    return HaloTokenizer(Tokenizer.from_file(str(path)))


def tokenizer_for(cfg: HaloConfig, directory: str | Path | None = None) -> HaloTokenizer:
    """The config's tokenizer (or `directory`), checked against the config."""
    directory = directory if directory is not None else cfg.tokenizer_dir()
    if directory is None:
        raise ValueError(
            f'config {cfg.name} ships no tokenizer; pass the Qwen2.5 tokenizer directory'
        )
    tok = load_tokenizer(directory)
    tok.check(cfg)
    return tok


def build_tiny_tokenizer(
    corpus: Iterable[str],
    special: SpecialTokens,
    *,
    bpe_vocab_size: int = 900,
    cross_word: bool = True,
) -> Tokenizer:
    """Byte-level BPE trained on `corpus`, padded with reserved tokens so the six special
    tokens land on the ids `special` asks for (halo-tiny: 1000..1005).

    cross_word: merges may span spaces, so a tiny model's stock phrases ('reach for the object
    with the left arm') become a few tokens: its thoughts shrink ~10x, and so does the cost of
    training and decoding them.
    """
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not cross_word)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer)
    first = min(dataclasses.asdict(special).values())
    size = tok.get_vocab_size()
    if size > first:
        raise ValueError(f'BPE vocabulary {size} overlaps the special ids from {first}')
    tok.add_special_tokens([f'<|reserved_{i}|>' for i in range(first - size)])
    order = sorted(dataclasses.asdict(special).items(), key=lambda kv: kv[1])
    tok.add_tokens(
        [AddedToken(SPECIAL_STRINGS[k], special=False, normalized=False) for k, _ in order]
    )
    return tok
