"""The toy twin's tokenizer: a small byte-level BPE learned from ShapesWorld, with the release's special tokens.

The special tokens sit at the ids the release pins (`omni_lab.tokenizer.SPECIAL_TOKENS`, ids 0-31) and the chat
template is the same `CHAT_TEMPLATE`, so prompts are laid out exactly as for the real model. The 256 byte tokens mean
any text still encodes; merges learned from `shapesworld.corpus()` make every basic-tier question word, answer word and
frame a single token, so answers are one or two tokens. The processor's frame labels for ShapesWorld clips ("Frame 3
sampled at 0.25 seconds and frame 4 sampled at 0.38 seconds: ") are added tokens, one per tubelet, so a 64-frame prompt
spends 32 text tokens rather than ~640 on them (clips at other frame rates still tokenise, piece by piece); the hard
tier's answer words ("early", "middle", "late") are added tokens matched as single words only.

The vocabulary grows only by appending: the BPE corpus is frozen with the basic tier and added tokens come after the
ones a checkpoint already has, so `extend` can give a trained checkpoint the newer vocabulary without moving any id its
embeddings were trained on (the new rows are the embedding table's spare ones, untrained until a stage trains them).
"""

from __future__ import annotations

from ..tokenizer import train_tokenizer

VOCAB_SIZE = 640


def build_vocabulary(vocab_size: int = VOCAB_SIZE):
    """A `PreTrainedTokenizerFast` trained (deterministically, in milliseconds) on ShapesWorld's corpus.

    Args:
        vocab_size: upper bound on the vocabulary (special slots + 256 bytes + merges + added tokens); the model's
            embedding table must have at least this many rows.
    Returns:
        `transformers.PreTrainedTokenizerFast` with `chat_template` set.
    """
    from tokenizers import AddedToken

    from .shapesworld import added_tokens, corpus

    labels, words = added_tokens()
    tokenizer = train_tokenizer(corpus() * 2, vocab_size, added_tokens=tuple(labels))
    tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=False) for word in words])
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the ShapesWorld vocabulary has {len(tokenizer)} tokens, over vocab_size={vocab_size}")
    return tokenizer


def extend(processor, vocab_size: int = VOCAB_SIZE) -> int:
    """Give a trained twin's processor the current vocabulary when it only appends to the one it has.

    Args:
        processor: a loaded twin's processor (its `tokenizer` is replaced in place).
        vocab_size: the model's embedding rows.
    Returns:
        how many tokens were appended (0: the vocabulary was already current).
    Raises:
        ValueError: a token of the checkpoint's vocabulary would change id (the BPE corpus or the order of added
            tokens changed), which would scramble what its embeddings mean.
    """
    current = build_vocabulary(vocab_size)
    have, want = processor.tokenizer.get_vocab(), current.get_vocab()
    moved = sorted((token for token, index in have.items() if want.get(token) != index), key=have.get)
    if moved:
        raise ValueError(
            f"the current ShapesWorld vocabulary renumbers {len(moved)} of the checkpoint's tokens (first: "
            f"{moved[:3]}); keep shapesworld.corpus() frozen and append new added tokens after the old ones"
        )
    appended = len(want) - len(have)
    if appended:
        processor.tokenizer = current
    return appended
