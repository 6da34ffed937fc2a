"""An offline tokenizer for the random presets, with the released model's special tokens and chat template.

The released checkpoint ships a 131,072-entry byte-level BPE tokenizer whose first 1,000 ids are special slots
(`<unk>` 0, `<s>` 1, `</s>` 2, `<|im_start|>` 10, `<|im_end|>` 11, `<image>` 18, `<img>` 19, `</img>` 20,
`<so_embedding>` 27; docs/model_layout.md §7). Nothing may be downloaded here, so the random presets
get a small byte-level BPE built in-process: the same special tokens at the same ids where the release pins them,
256 byte tokens (any text encodes, nothing is ever unknown), and merges learned from a short built-in corpus so that
ordinary words and the video frame labels take a few tokens rather than one per byte. Building it is deterministic
and takes a few milliseconds.

The chat template follows the Nemotron 3 family's ChatML with reasoning control: `<|im_start|>role\\n...<|im_end|>\\n`,
media parts written as the processor's placeholders (`<image>`, `<video>`, `<so_embedding>`) before the text, and
the assistant turn opened with `<think>\\n` (thinking on) or `<think></think>` (thinking off).
"""

from __future__ import annotations

import functools

# Ids the release pins (docs/model_layout.md §7) plus the reasoning and audio markers, placed in the special range.
SPECIAL_TOKENS: dict[int, str] = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    10: "<|im_start|>",
    11: "<|im_end|>",
    12: "<think>",
    13: "</think>",
    18: "<image>",
    19: "<img>",
    20: "</img>",
    21: "<video>",
    27: "<so_embedding>",
    28: "<so_start>",
    29: "<so_end>",
}
NUM_SPECIAL_SLOTS = 32  # ids 0..31 are special; unnamed slots are `<SPECIAL_{i}>` as in the release

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ '\n' + message['content'] }}"
    "{%- else -%}{{ '\n' }}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>{{ '\n' }}"
    "{%- elif part['type'] == 'video' -%}<video>{{ '\n' }}"
    "{%- elif part['type'] == 'audio' -%}<so_embedding>{{ '\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "<|im_end|>{{ '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "<|im_start|>assistant{{ '\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking -%}<think></think>"
    "{%- else -%}<think>{{ '\n' }}{%- endif -%}"
    "{%- endif -%}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. What is shown in this image? Describe the picture in one sentence.
Which way does the square move? The circle moves to the left, the triangle moves to the right, nothing moves.
How many beeps do you hear? There are three beeps. Is the sound high or low? It is a high tone, not noise.
What colour is the shape? The shape is red, green, blue, yellow, white, black, orange or purple.
Where is the object? It is at the top, the bottom, the left or the right of the frame.
You are a helpful assistant. Answer the question about the image, the video and the audio.
Summarise the video. Transcribe the audio. Count the objects. Read the text in the document.
"""


def _frame_label_corpus() -> str:
    labels = []
    for first in range(1, 40, 2):
        t0, t1 = (first - 1) * 0.5, first * 0.5
        labels.append(f"Frame {first} sampled at {t0:.2f} seconds and frame {first + 1} sampled at {t1:.2f} seconds: ")
    return "\n".join(labels)


@functools.lru_cache(maxsize=4)
def build_tokenizer(vocab_size: int = 1024):
    """A `PreTrainedTokenizerFast` with the released special tokens at their ids, bytes, and learned merges.

    Args:
        vocab_size: total size including the 32 special slots and 256 bytes (at least 288). The model's embedding
            table must be at least this large.
    Returns:
        `transformers.PreTrainedTokenizerFast` with `chat_template` set. Cached: treat it as read-only.
    """
    if vocab_size < NUM_SPECIAL_SLOTS + 256:
        raise ValueError(f"vocab_size must be at least {NUM_SPECIAL_SLOTS + 256}, got {vocab_size}")
    return train_tokenizer([_CORPUS * 4, _frame_label_corpus()], vocab_size)


def train_tokenizer(texts: list[str], vocab_size: int, added_tokens: tuple[str, ...] = ()):
    """Train a byte-level BPE on `texts` (deterministic, milliseconds) with the release's special tokens at their ids.

    Args:
        texts: training texts.
        vocab_size: upper bound on the vocabulary (special slots + 256 bytes + merges).
        added_tokens: extra whole-string tokens appended after training (not special: they decode as text).
    Returns:
        `transformers.PreTrainedTokenizerFast` with the release's chat template.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [SPECIAL_TOKENS.get(i, f"<SPECIAL_{i}>") for i in range(NUM_SPECIAL_SLOTS)]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,  # trainers place special tokens first, in this order: id == slot
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
    if added_tokens:
        tokenizer.add_tokens([AddedToken(text, special=False, normalized=False) for text in added_tokens])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<unk>",
        model_max_length=1 << 30,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
