"""The twin's architecture, tokenizer and training path: training sees exactly what `Lab.run` builds."""

import numpy as np
import pytest
import torch

from omni_lab import forward
from omni_lab.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS
from omni_lab.toy import batching, shapesworld
from omni_lab.toy.architecture import TWIN, build_twin
from omni_lab.toy.supervision import TokenHeads
from omni_lab.toy.training import ExpertLoad, TrainSettings, _draw_step, learning_rate, pretrain_encoders, train

FAMILY_SEEDS = [("image", 3), ("video", 4), ("audio", 5), ("omni", 6), ("text", 7), ("omni", 8), ("video", 9)]


@pytest.fixture(scope="module")
def twin():
    return build_twin(seed=0, for_training=True)


@pytest.fixture(scope="module")
def prepared(twin):
    examples = [shapesworld.sample(seed, family=family) for family, seed in FAMILY_SEEDS]
    return batching.prepare(twin, examples)


def test_the_twin_keeps_every_mechanism_of_the_release(twin):
    info = twin.info()
    pattern = info["layer_pattern"]
    assert 8 <= len(pattern) <= 12 and {"M", "E", "*"} <= set(pattern) and pattern.count("*") >= 2
    text = twin.config.text_config
    assert text.n_routed_experts >= 16 and text.num_experts_per_tok >= 2 and text.n_shared_experts == 1
    assert text.routed_scaling_factor == 2.5 and text.norm_topk_prob and text.mlp_hidden_act == "relu2"
    gate = twin.model.language_model.model.layers[pattern.index("E")].mixer.gate
    assert gate.e_score_correction_bias.shape == (text.n_routed_experts,)
    vision = twin.model.vision_model.embeddings
    assert vision.video_patch_projection.in_features == 2 * vision.patch_projection.in_features  # 2-frame tubelets
    assert twin.config.downsample_ratio == 0.5
    audio = twin.config.audio_config
    assert audio.subsampling_factor == 8 and audio.num_mel_bins == 128
    assert 1e6 < info["parameters"]["checkpoint"] < 1e7
    assert info["budgets"]["image_tokens"] == [16, 16] and info["budgets"]["video_tokens_per_tubelet"] == 16


def test_prompts_have_the_token_counts_of_the_geometry(twin, prepared):
    for item in prepared:
        counts = item.prompt.token_map.counts()
        example = item.example
        if example.image is not None:
            assert counts["image"] == 16
        if example.video is not None:
            tubelets = -(-example.video.num_frames // 2)
            assert counts["video"] == 16 * tubelets
        if example.audio is not None:
            seconds = len(example.audio[0]) / 16000
            assert abs(counts["audio"] - 12.5 * seconds) <= 2


def test_vocabulary_keeps_the_release_special_tokens_and_template(twin):
    tokenizer = twin.tokenizer
    for token_id, token in SPECIAL_TOKENS.items():
        assert tokenizer.convert_ids_to_tokens(token_id) == token
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert len(tokenizer) <= TWIN.text["vocab_size"]
    for word in shapesworld.answer_words():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.decode(ids) == word
    for label in shapesworld.frame_labels():
        assert len(tokenizer(label, add_special_tokens=False)["input_ids"]) == 1
    anything = "Wie spät ist es? 🙂 <image> 12.5"
    assert tokenizer.decode(tokenizer(anything, add_special_tokens=False)["input_ids"]) == anything


def test_training_inputs_equal_the_public_path(twin, prepared):
    """Ids from a fresh `lab.prompt` and embeddings from `forward.encode_media` + `merge_embeddings` per prompt."""
    model = twin.model
    with torch.no_grad():
        batched = batching.merged_embeddings(model, prepared)
        for item, (embeds, keep) in zip(prepared, batched, strict=True):
            again = item.example.prompt(twin)
            assert torch.equal(again.input_ids, item.prompt.input_ids)
            reference = forward.merge_embeddings(model, again, forward.encode_media(model, again))
            assert keep.all()
            torch.testing.assert_close(embeds, reference, rtol=0, atol=1e-5)
            answer_and_end = twin.tokenizer.decode(item.target_ids)
            assert answer_and_end == item.example.answer + "<|im_end|>"


def test_right_padding_leaves_every_real_position_unchanged(twin, prepared):
    model = twin.model
    with torch.no_grad():
        batch = batching.build_batch(model, prepared)
        assert len(set(batch.lengths.tolist())) > 1
        padded = model.language_model(inputs_embeds=batch.embeds).logits
        for row, length in enumerate(batch.lengths.tolist()):
            alone = model.language_model(inputs_embeds=batch.embeds[row : row + 1, :length]).logits[0]
            torch.testing.assert_close(padded[row, :length], alone, rtol=0, atol=2e-5)
        picked = batching.answer_logits(model, batch)
        torch.testing.assert_close(picked, padded[batch.loss_rows, batch.loss_positions], rtol=0, atol=1e-5)


def test_loss_positions_predict_the_answer_then_the_end_of_turn(twin, prepared):
    with torch.no_grad():
        batch = batching.build_batch(twin.model, prepared)
    end = twin.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, item in enumerate(prepared):
        chosen = batch.loss_rows == row
        positions = batch.loss_positions[chosen]
        targets = batch.loss_targets[chosen].tolist()
        assert targets == item.target_ids and targets[-1] == end
        assert positions[0] == len(item.prompt) - 1  # the assistant prompt's last token predicts the answer
        assert positions.tolist() == list(range(len(item.prompt) - 1, len(item.prompt) - 1 + len(targets)))


def test_evs_augmentation_prunes_what_the_model_would(twin, prepared):
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    model = twin.model
    rates = [0.5 if item.example.video is not None else 0.0 for item in prepared]
    with torch.no_grad():
        pruned = batching.merged_embeddings(model, prepared, rates)
        for item, (embeds, keep) in zip(prepared, pruned, strict=True):
            prompt = item.prompt
            video = prompt.token_map.rows(modality="video")
            if not video.any():
                assert keep.all()
                continue
            features = forward.encode_media(model, prompt).videos[0]
            tubelets = int(video.sum()) // 16
            expected = compute_retention_mask(features, tubelets, 0.5).numpy()
            assert np.array_equal(keep[video], expected)
            assert int(keep[video].sum()) == max(16, int(video.sum() * 0.5))
            assert embeds.shape[1] == int(keep.sum())


def test_learning_rate_warms_up_then_decays_to_the_floor():
    settings = TrainSettings(steps=1000, lr=1e-3, warmup=100, final_lr_fraction=0.1)
    assert learning_rate(0, settings) == pytest.approx(1e-5)
    assert learning_rate(99, settings) == pytest.approx(1e-3)
    assert learning_rate(550, settings) == pytest.approx(0.55e-3)
    assert learning_rate(999, settings) == pytest.approx(1e-4, rel=1e-3)


def test_expert_load_counts_the_routers_choices_and_raises_underused_experts(twin, prepared):
    language_model = twin.model.language_model
    load = ExpertLoad(language_model)
    try:
        with torch.no_grad():
            batch = batching.build_batch(twin.model, prepared[:2])
            load.valid = (torch.arange(batch.embeds.shape[1])[None] < batch.lengths[:, None]).reshape(-1)
            language_model.model(inputs_embeds=batch.embeds)
        valid_tokens = int(batch.lengths.sum())
        top_k = twin.config.text_config.num_experts_per_tok
        for counts in load.counts:
            assert counts.sum() == valid_tokens * top_k
        before = [router.e_score_correction_bias.clone() for router in load.routers]
        counts = [c.clone() for c in load.counts]
        load.rebalance(0.01)
        for router, old, count in zip(load.routers, before, counts, strict=True):
            step = router.e_score_correction_bias - old
            torch.testing.assert_close(step, 0.01 * torch.sign(count.mean() - count))
            router.e_score_correction_bias.copy_(old)
        assert all(c.sum() == 0 for c in load.counts)
    finally:
        load.close()
    assert not any(router._forward_hooks for router in load.routers)


def test_training_initialisation_lets_audio_through():
    """transformers' N(0, 0.02) init flattens the audio features; the training init keeps them time-varying."""
    example = shapesworld.sample(5, family="audio")
    spreads = {}
    for for_training in (False, True):
        lab = build_twin(seed=0, for_training=for_training)
        with torch.no_grad():
            features = forward.encode_media(lab.model, example.prompt(lab)).audios[0]
        spreads[for_training] = float(features.std(0).mean() / features.abs().mean())
    assert spreads[False] < 0.1 < spreads[True]


ENCODER_MIX = {"image": 1, "video": 1}


def test_encoder_warm_up_trains_the_vision_tower_and_projector_only():
    lab = build_twin(seed=0, for_training=True)
    heads = TokenHeads(lab.config.text_config.hidden_size)
    before = {name: value.clone() for name, value in lab.model.state_dict().items()}
    settings = TrainSettings(encoder_steps=2, encoder_mix=ENCODER_MIX, encoder_warmup=1)
    assert pretrain_encoders(lab, heads, settings, counter=7, progress=False) == 7 + 2 * 2
    changed = {name for name, value in lab.model.state_dict().items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith(("vision_model.", "multi_modal_projector.")) for name in changed)
    assert any(name.startswith("vision_model.encoder") for name in changed)


def test_training_is_reproducible_from_the_seed(tmp_path):
    import omni_lab as ol

    mix = {"image": 1, "video": 1, "audio": 1, "omni": 1, "text": 1}
    runs = {}
    summaries = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        settings = TrainSettings(steps=2, seed=seed, warmup=1, mix=mix, encoder_steps=2, encoder_mix=ENCODER_MIX)
        summaries[name] = summary = train(tmp_path / name, settings, progress=False, evaluate_examples=0)
        assert summary["examples_seen"] == 2 * 5 + 2 * 2
        runs[name] = ol.load(str(tmp_path / name), progress=False)
    for file in ("config.json", "model.safetensors", "tokenizer.json", "loss_curve.csv", "loss_curve.png"):
        assert (tmp_path / "a" / file).is_file()
    state = {name: lab.model.state_dict() for name, lab in runs.items()}
    assert runs["a"].dtype == torch.float32 and state["a"]["language_model.lm_head.weight"].dtype == torch.float32
    for key, value in state["a"].items():
        assert torch.equal(value, state["b"][key]), key
    assert any(not torch.equal(value, state["c"][key]) for key, value in state["a"].items())
    assert summaries["a"]["final_loss"] == summaries["b"]["final_loss"]
    curve = (tmp_path / "a" / "loss_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss,lr,seconds") and len(curve) == 3
    # The checkpoints are stored in float16, which can hide float32 differences; the loss curves are written at full
    # precision (Python's repr round-trips every float), so equal runs must give the same text, column by column.
    curves = {name: read_curve(tmp_path / name / "loss_curve.csv") for name in runs}
    assert set(curves["a"]) == set(curves["b"]) and {"loss", "lr", "loss_video", "loss_tokens_video"} <= set(
        curves["a"]
    )
    for column, values in curves["a"].items():
        if column != "seconds":  # wall time is the one column allowed to differ
            assert values == curves["b"][column], column
    assert curves["a"]["loss"] != curves["c"]["loss"]  # another seed trains on other examples


def read_curve(path) -> dict[str, list[str]]:
    """loss_curve.csv as {column: the values exactly as written}."""
    import csv

    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {column: [row[column] for row in rows] for column in rows[0]}


def test_a_continued_run_starts_from_its_checkpoint_and_records_both_stages(tmp_path):
    """Stage 2 (`--recipe continue`): starts from the given checkpoint's weights, draws "family/task" mix keys as
    that task, and writes a training.json and card naming stage 1 and stage 2."""
    import json

    import omni_lab as ol

    first = TrainSettings(steps=1, seed=3, warmup=1, mix={"image": 1}, encoder_steps=0)
    train(tmp_path / "one", first, progress=False, evaluate_examples=0)
    examples, counter = _draw_step(TrainSettings(mix={"text/repeat": 3, "image": 1}), 0)
    assert [e.task for e in examples[:3]] == ["repeat"] * 3 and examples[3].family == "image" and counter == 4
    second = TrainSettings(
        steps=1, seed=4, warmup=1, mix={"text/repeat": 1}, encoder_steps=0, token_supervision=0.0,
        init_from=str(tmp_path / "one"),
    )  # fmt: skip
    start = ol.load(str(tmp_path / "one"), progress=False).model.state_dict()
    summary = train(tmp_path / "two", second, progress=False, evaluate_examples=0)
    record = json.loads((tmp_path / "two" / "training.json").read_text())
    assert record["previous"]["settings"]["seed"] == 3 and record["settings"]["init_from"] == str(tmp_path / "one")
    after = ol.load(str(tmp_path / "two"), progress=False).model.state_dict()
    moved = [name for name, value in after.items() if not torch.equal(value, start[name])]
    # one small step from stage 1's weights: the embeddings moved, and by far less than a fresh initialisation is
    embeddings = "language_model.model.embeddings.weight"
    assert moved and (after[embeddings] - start[embeddings]).abs().max() < 0.05
    from omni_lab.toy.model_card import _training_section

    section = "\n".join(_training_section(summary))
    assert "Stage 1, from scratch" in section and "--recipe continue --init" in section


def test_a_stage_grows_an_older_vocabulary_without_moving_any_id():
    """Stage 3 (`--recipe hard`) starts from a checkpoint whose tokenizer has the basic tier's 16 frame labels only:
    `vocabulary.extend` appends the longer clips' labels and the time words after them, every old id kept, so old
    prompts tokenise exactly as before; a vocabulary that would renumber a token is refused."""
    from omni_lab.tokenizer import train_tokenizer
    from omni_lab.toy import vocabulary
    from omni_lab.toy.architecture import build_twin_processor

    processor = build_twin_processor()
    old = train_tokenizer(shapesworld.corpus() * 2, 640, added_tokens=tuple(shapesworld.frame_labels(16)))
    processor.tokenizer = old
    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 2), family="omni")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": example.question}]}], tokenize=False
    )
    before = old(text, add_special_tokens=False)["input_ids"]
    assert vocabulary.extend(processor) == len(shapesworld.frame_labels()) - 16 + len(shapesworld.HARD_ANSWER_WORDS)
    grown = processor.tokenizer
    assert all(grown.get_vocab()[token] == index for token, index in old.get_vocab().items())
    assert grown(text, add_special_tokens=False)["input_ids"] == before
    assert vocabulary.extend(processor) == 0
    processor.tokenizer = train_tokenizer(["a different corpus, so other merges"] * 4, 640)
    with pytest.raises(ValueError, match="renumbers"):
        vocabulary.extend(processor)


def test_word_targets_mark_the_answer_words_only(twin):
    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), family="omni", task="count_and_direction")
    (item,) = batching.prepare(twin, [example])
    pieces = [twin.tokenizer.decode([i]) for i in item.target_ids]
    assert "".join(pieces[:-1]) == example.answer and pieces[-1] == "<|im_end|>"
    assert item.word_targets == [any(c.isalnum() for c in piece) and piece != "<|im_end|>" for piece in pieces]
    assert item.word_targets.count(True) == 2 and item.word_targets[-1] is False  # "3", " left"; not "," or the end


def test_label_smoothing_applies_to_answer_words_and_spares_the_end_of_turn(twin, prepared):
    from omni_lab.toy.training import answer_loss

    with torch.no_grad():
        batch = batching.build_batch(twin.model, prepared)
        logits = batching.answer_logits(twin.model, batch)
    exact = torch.nn.functional.cross_entropy(logits, batch.loss_targets, reduction="none")
    smoothed = torch.nn.functional.cross_entropy(logits, batch.loss_targets, reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(answer_loss(logits, batch), exact.sum(), rtol=0, atol=1e-5)
    words = batch.loss_words
    assert words.any() and (~words).any()
    end = twin.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not words[batch.loss_targets == end].any()
    expected = smoothed[words].sum() + exact[~words].sum()
    torch.testing.assert_close(answer_loss(logits, batch, 0.1), expected, rtol=0, atol=1e-5)


def test_the_card_lists_every_stage_with_its_command():
    from omni_lab.toy.model_card import _training_section, stages

    def stage(seed, recipe, init, previous):
        settings = TrainSettings(seed=seed, steps=10, recipe=recipe, init_from=init, encoder_steps=0)
        return {"settings": settings.__dict__, "wall_seconds": 60.0 * seed + 60, "final_loss": 0.1,
                "examples_seen": 240, "previous": previous}  # fmt: skip

    third = stage(2, "hard", "toy", stage(1, None, "toy", stage(0, None, None, None)))
    assert [s["settings"]["seed"] for s in stages(third)] == [0, 1, 2]
    section = "\n".join(_training_section(third))
    assert "omni-lab train-toy --out STAGE1 --steps 10 --seed 0 --threads 2" in section
    assert "--out STAGE2 --steps 10 --seed 1 --recipe continue --init STAGE1" in section
    assert "--out DIR --steps 10 --seed 2 --recipe hard --init STAGE2" in section
    assert "Stage 3, continued from stage 2" in section and "All 3 stages: 6.0 min" in section


def test_event_read_outs_target_the_events_tokens_at_their_positions_in_the_reduced_sequence(twin):
    """The hard tier's hidden-state read-outs (`event_supervision`): video tokens that show an event are labelled with
    its colour and kind, audio tokens with the shape flashing in their window, and the loss reads the residual stream
    after `HIDDEN_LAYER` at the kept tokens' positions (EVS-pruned ones have none), back-propagating into the LLM."""
    from omni_lab.toy.event_supervision import HIDDEN_LAYER, EventHeads, event_targets, flash_now_targets
    from omni_lab.toy.supervision import COLOUR_CLASSES, SHAPE_CLASSES

    example = shapesworld.sample(shapesworld.eval_seed(0, "sync", 1), family="sync", task="beep_shape")
    (item,) = batching.prepare(twin, [example])
    truth = example.truth["events"]
    rows, labels = event_targets(item.prompt, truth)
    flagged = rows[labels["event_colour"] > 0]
    assert len(flagged) and set(flagged) <= set(np.flatnonzero(truth.event_rows(item.prompt.token_map)))
    assert {COLOUR_CLASSES[c] for c in labels["event_colour"][labels["event_colour"] > 0]} == {
        event.shape.colour for event in truth.events
    }
    assert ((labels["event_colour"] > 0) == (labels["event_shape"] > 0)).all()
    audio_rows, audio = flash_now_targets(item.prompt, truth)
    token_map = item.prompt.token_map
    for event in truth.events:
        start, end = event.seconds
        during = (token_map["t0"][audio_rows] < end - 0.04) & (token_map["t1"][audio_rows] > start + 0.04)
        assert (audio["flash_now"][during] == SHAPE_CLASSES.index(event.shape.shape)).all() and during.any()
    model = twin.model
    batch = batching.build_batch(model, [item], [0.7])  # EVS prunes 70% of the video tokens
    logits, hidden = batching.answer_logits_and_hidden(model, batch, HIDDEN_LAYER)
    assert not model.language_model.model.layers[HIDDEN_LAYER]._forward_hooks
    with torch.no_grad():
        torch.testing.assert_close(logits, batching.answer_logits(model, batch), rtol=0, atol=1e-5)
    keep = batch.keeps[0]
    assert hidden.shape[1] >= int(keep.sum()) and not keep[rows].all()
    heads = EventHeads(hidden.shape[-1])
    loss = heads.loss([item], batch.keeps, hidden)
    assert loss.item() > 0
    loss.backward()
    assert model.language_model.model.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_clock_read_outs_label_every_media_token_with_its_time_and_read_the_layer_before_attention(twin):
    """Stage 4's clock read-outs (`event_supervision.TIME_CLASSES`): every video and audio token is labelled with the
    half second its window starts in and every video token with its third of the clip, counted here by hand from the
    clip's frame times (frame i at i / 8 s, tubelets of 2 frames) and the 80 ms audio windows; the loss reads them
    after `TIME_LAYER` (the hook captures that layer and `HIDDEN_LAYER` in one forward) and reaches the first Mamba
    layer, which must do the counting."""
    from omni_lab.toy.event_supervision import HIDDEN_LAYER, TIME_LAYER, EventHeads, time_targets

    example = shapesworld.sample(shapesworld.eval_seed(0, "sync", 3), family="sync", task="beep_flash")
    (item,) = batching.prepare(twin, [example])
    truth = example.truth["events"]
    (video_rows, video), (audio_rows, audio) = time_targets(item.prompt, truth)
    tubelets = truth.num_frames // 2
    assert len(video_rows) == 16 * tubelets
    tubelet = np.repeat(np.arange(tubelets), 16)  # the map lists each tubelet's 16 tokens in order
    np.testing.assert_array_equal(video["half_second"], (2 * tubelet * 2 / 8.0).astype(int))
    np.testing.assert_array_equal(video["third"], (3 * tubelet) // tubelets)
    assert set(video["third"]) == {0, 1, 2} and video["half_second"].max() == (truth.num_frames - 2) // 4
    window = np.arange(len(audio_rows)) * 0.08
    np.testing.assert_array_equal(audio["half_second"], np.minimum(np.floor(window * 2 + 1e-9), 15).astype(int))
    assert "third" not in audio and len(audio_rows) == int(np.ceil(truth.seconds * 12.5))
    model = twin.model
    batch = batching.build_batch(model, [item], [0.0])
    logits, hidden = batching.answer_logits_and_hidden(model, batch, (TIME_LAYER, HIDDEN_LAYER))
    assert set(hidden) == {TIME_LAYER, HIDDEN_LAYER} and not hidden[TIME_LAYER].equal(hidden[HIDDEN_LAYER])
    assert not any(model.language_model.model.layers[i]._forward_hooks for i in (TIME_LAYER, HIDDEN_LAYER))
    heads = EventHeads(hidden[TIME_LAYER].shape[-1])
    plain = heads.loss([item], batch.keeps, hidden[HIDDEN_LAYER])
    timed = heads.loss([item], batch.keeps, hidden, timing=True)
    assert timed.item() != plain.item()
    heads.loss([item], batch.keeps, {TIME_LAYER: hidden[TIME_LAYER], HIDDEN_LAYER: hidden[HIDDEN_LAYER].detach()},
               timing=True).backward()  # fmt: skip
    assert model.language_model.model.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.language_model.model.layers[TIME_LAYER + 1].parameters())  # past it
    model.zero_grad(set_to_none=True)
