"""The offline tokenizer of the random presets."""

from omni_lab.tokenizer import build_tokenizer

# Ids the release pins (docs/model_layout.md §7).
RELEASE_IDS = {
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
    "<|im_end|>": 11,
    "<image>": 18,
    "<img>": 19,
    "</img>": 20,
    "<so_embedding>": 27,
}


def test_special_tokens_sit_at_the_release_ids():
    tokenizer = build_tokenizer(1024)
    for token, token_id in RELEASE_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    for token in ("<|im_start|>", "<think>", "</think>", "<so_start>", "<so_end>", "<video>"):
        assert tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]


def test_any_text_round_trips_and_ordinary_words_are_merged():
    tokenizer = build_tokenizer(1024)
    text = "Which way does the square move? Ünïcödé 日本 \t\n 3.14"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode(" seconds", add_special_tokens=False)) == 1
    assert max(ids) < 1024


def test_building_is_deterministic():
    build_tokenizer.cache_clear()
    first = build_tokenizer(1024).get_vocab()
    build_tokenizer.cache_clear()
    assert build_tokenizer(1024).get_vocab() == first
