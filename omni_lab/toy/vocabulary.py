"""The toy twin's tokenizer: a small byte-level BPE learned from ShapesWorld, with the release's special tokens.

The special tokens sit at the ids the release pins (`omni_lab.tokenizer.SPECIAL_TOKENS`, ids 0-31) and the chat
template is the same `CHAT_TEMPLATE`, so prompts are laid out exactly as for the real model. The 256 byte tokens mean
any text still encodes; merges learned from `shapesworld.corpus()` make every question word, answer word and frame
a single token, so answers are one or two tokens. The processor's frame labels for ShapesWorld clips ("Frame 3 sampled
at 0.25 seconds and frame 4 sampled at 0.38 seconds: ") are added tokens, one per tubelet, so a 16-frame prompt spends
8 text tokens rather than ~150 on them (clips at other frame rates still tokenise, piece by piece).
"""

from __future__ import annotations

from ..tokenizer import train_tokenizer

VOCAB_SIZE = 640


def build_vocabulary(vocab_size: int = VOCAB_SIZE):
    """A `PreTrainedTokenizerFast` trained (deterministically, in milliseconds) on ShapesWorld's corpus.

    Args:
        vocab_size: upper bound on the vocabulary (special slots + 256 bytes + merges); the model's embedding table
            must have at least this many rows.
    Returns:
        `transformers.PreTrainedTokenizerFast` with `chat_template` set.
    """
    from .shapesworld import corpus, frame_labels

    return train_tokenizer(corpus() * 2, vocab_size, added_tokens=tuple(frame_labels()))
