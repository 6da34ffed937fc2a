"""Train the toy twin on ShapesWorld on a CPU, from scratch or continuing a checkpoint; reproducible from the seed.

Recipe: first `encoder_steps` steps warm up the vision tower alone on the per-token read-outs (`pretrain_encoders`).
Then every step draws a fixed mix of fresh examples per family (seeds `shapesworld.train_seed(seed, i)`, so a run never
touches the held-out range), builds them through `lab.prompt` (batching.py), and minimises the cross-entropy of the
answer tokens and the end-of-turn token, plus (weight `token_supervision`) the per-token auxiliary loss of
supervision.py; both stand in for the release's pretrained encoders. AdamW with linear warm-up and cosine decay,
gradient clipping at 1. Half of the video prompts are pruned by EVS at a random rate in [0.3, 0.8] so the twin works
with the release's token reduction. The MoE routers' `e_score_correction_bias` is trained as in the release
(aux-loss-free balancing, DeepSeek-V3 §2.1.2): after every step each layer's bias moves by `bias_rate` towards equal
expert load. The model starts from `architecture.initialise_for_training` and runs in eval mode throughout (no dropout
is configured, and the audio tower's BatchNorm keeps its running statistics), so the training forward is the inference
forward. Two torch threads by default (a full step takes 0.83 s against 0.99 s with one on an idle 2-core machine);
pass `--threads 1` when another process shares the cores, where two threads slow down many-fold.

The shipped twins are three stages (`RECIPES`): "scratch" (the recipe above), "continue" (stage 2: repeat questions)
and "hard" (stage 3: the hard tier of long, mostly still clips with brief events, with label smoothing so the twin's
log-probabilities carry information); "timing" (a fourth stage with read-outs of the clock, see `TIMING`) was run and
not shipped. A continued stage records the stage it started from in its training.json.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import batching, shapesworld
from .architecture import TWIN, build_twin
from .event_supervision import HIDDEN_LAYER, TIME_LAYER, EventHeads
from .supervision import TokenHeads

# Main-phase steps per minute of the shipped run, encoder warm-up included (2 threads of an idle 2-core CPU: 2400
# steps in 36.0 min); `--minutes N` scales both phases of the recipe by N * this / steps.
STEPS_PER_MINUTE = 2400 / 36.0


@dataclass
class TrainSettings:
    """Hyper-parameters of a training run (recorded in the model card)."""

    steps: int = 2400
    seed: int = 0
    lr: float = 1e-3
    warmup: int = 150
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.05
    clip: float = 1.0
    mix: dict = field(default_factory=lambda: {"image": 6, "video": 6, "audio": 5, "omni": 5, "text": 2})
    evs_probability: float = 0.5
    evs_rates: tuple = (0.3, 0.8)
    bias_rate: float = 1e-3
    token_supervision: float = 2.0
    encoder_steps: int = 2000
    encoder_mix: dict = field(default_factory=lambda: {"image": 12, "video": 4})
    encoder_warmup: int = 100
    threads: int = 2
    init_from: str | None = None  # a checkpoint to continue from ("toy" or a directory); None: from scratch
    label_smoothing: float = 0.0  # on the answer's word tokens (`batching.PreparedExample.word_targets`)
    event_supervision: float = 0.0  # weight of the hard tier's hidden-state read-outs (`event_supervision.py`)
    time_supervision: bool = False  # the read-outs also read the clock (`event_supervision.TIME_CLASSES`)
    recipe: str | None = (
        None  # the `RECIPES` entry these came from, for the card (None: scratch, or continue with init)
    )
    save_every: int = 0  # also save the model every this many steps into out/step-N (0: only at the end)

    @property
    def examples_per_step(self) -> int:
        return sum(self.mix.values())


# Stage 2 of the shipped twin (`--recipe continue --init STAGE1`): continue from stage 1 (the recipe above) on a
# text-heavy mix with twelve repeat questions per step, fresh examples (run seed 1), 0.3 x the learning rate and no
# encoder warm-up or token read-outs (the encoders are trained; fresh read-out heads would only pull them about).
# Stage 1 left text/repeat at 43% and image/count at 88.5%: copying several words in order is learned from repeat
# questions, of which stage 1 saw about 0.7 per step. (600 steps of {"image": 6, "video": 2, "audio": 2, "omni": 2,
# "text": 12} at lr 1e-4 took repeat to 62.5% only.)
CONTINUE = dict(
    seed=1,
    steps=1200,
    lr=3e-4,
    warmup=50,
    mix={"image": 4, "video": 2, "audio": 2, "omni": 2, "text": 4, "text/repeat": 12},
    encoder_steps=0,
    token_supervision=0.0,
)
# Stage 3 of the shipped twin (`--recipe hard --init STAGE2`): the hard tier (shapesworld.TIERS["hard"]: long, mostly
# still clips whose answer lies in 1-3 frames) learned on top of stage 2, fresh examples (run seed 2). Per step 14 hard
# examples (2.5 per events task, 2 per sync task) and 10 of the basic tier, every family of it, so nothing is
# forgotten; lr 7e-4 (stage 2: 3e-4), new circuits to learn in few steps. Label smoothing 0.05 on the answer's word tokens:
# stages 1-2 left the twin near-certain on every task (log p(answer) within 0.001 of 0), which makes every ablation and
# attribution a difference of float noise; with smoothing the best a confident answer can get is p = 0.95 (a logit
# margin of about 9 nats over any other token), so log-probabilities fall where the evidence is weak or removed. 0.05
# rather than the usual 0.1 keeps two-word answers (two smoothed tokens) near their accuracy: a confident "3, left" is
# worth 0.90, not 0.81. The vocabulary grows by the 64-frame clips' frame labels and the three time words
# (`vocabulary.extend`); EVS augmentation as before.
HARD = dict(
    seed=2,
    steps=900,
    lr=7e-4,
    warmup=50,
    mix={
        "events": 10,
        "sync": 4,
        "image": 3,
        "video": 2,
        "audio": 1,
        "omni": 2,
        "text": 1,
        "text/repeat": 1,
    },
    encoder_steps=0,
    token_supervision=0.0,
    label_smoothing=0.05,
    event_supervision=1.0,
)
# Stage 4 (`--recipe timing --init STAGE3`): stage 3 left the tasks that need a sense of time at or below chance
# (flash_time 20% of 3 classes, beep_shape 25% and beep_flash 45% of 2) and forgot part of omni/kind_and_shape (72.5%).
# Its loss curve shows why more of the same would not help: the sync answer loss sat at ln 2 from step 150 to 900 and
# the flash_now read-out at 0.47, while the events loss kept falling. The twin's LLM has no positional encoding, so a
# token knows when it happens only if a layer works it out, and nothing asked for that. So stage 4 reads the clock
# before the first attention layer (`event_supervision.TIME_CLASSES`: the half second of every video and audio token,
# the third of the clip of every video token), weights the timing tasks up (6 sync, 3 flash_time and 2 flash_count
# per step) and replays the forgotten task; lr 5e-4, fresh examples (run seed 3). Measured (40 held-out per task):
# events 65.0% -> 71.9% (flash_count 62.5 -> 75, appeared_shape 77.5 -> 82.5, flash_time 20 -> 30),
# omni/kind_and_shape 72.5% -> 92.5%, image/count 92.5% -> 82.5%; sync 35% -> 46% is still chance. Linear probes on
# 30 held-out sync clips say why: after layer 2 the half second of a video token is read right 74% of the time
# (stage 3: 25%) and of an audio token 59% (50%), so each modality now has a clock, but the flash_now read-out after
# the first attention layer finds 13% of the flashing audio windows (stage 3: 15%): the attention layer has not
# learned to match an audio token to the video tokens of its moment, and the sync answer loss stayed at ln 2. Not
# shipped: CI's independent held-out sample (tests/test_toy.py, evaluation seed 1) found appeared_shape at 19/32,
# below the floor of the 82.5% its 40-example card table gave (74% pooled over 172 fresh examples); "toy-hard" stays
# stage 3. The next step: supervise the first attention layer's audio queries onto the video keys of their moment.
TIMING = {  # stage 3's settings (no encoder phase, smoothing, event read-outs) with the clock read out
    **HARD,
    "seed": 3,
    "steps": 600,
    "lr": 5e-4,
    "warmup": 30,
    "mix": {
        "sync": 6,
        "events/flash_time": 3,
        "events/flash_count": 2,
        "events": 2,
        "image": 2,
        "video": 2,
        "audio": 1,
        "omni": 1,
        "omni/kind_and_shape": 2,
        "text": 1,
        "text/repeat": 1,
    },
    "time_supervision": True,
}
RECIPES = {"scratch": {}, "continue": CONTINUE, "hard": HARD, "timing": TIMING}
CONTINUED_RECIPES = ("continue", "hard", "timing")  # recipes that start from a checkpoint (`--init`)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up to `lr`, then cosine decay to `final_lr_fraction * lr` at the last step."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    floor = settings.final_lr_fraction
    return settings.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class ExpertLoad:
    """Counts the experts each MoE router picks during a forward (hooks come off on `close`)."""

    def __init__(self, language_model):
        self.routers = [module for name, module in language_model.named_modules() if name.endswith("mixer.gate")]
        self.counts = [torch.zeros(router.num_experts) for router in self.routers]
        self.valid: torch.Tensor | None = None  # (B*L,) bool: real (unpadded) positions of the current batch
        self._handles = [router.register_forward_hook(self._hook(i)) for i, router in enumerate(self.routers)]

    def _hook(self, index: int):
        def record(module, inputs, output):
            chosen = output[2].detach()  # (tokens, top_k)
            if self.valid is not None and self.valid.shape[0] == chosen.shape[0]:
                chosen = chosen[self.valid]
            self.counts[index] += torch.bincount(chosen.reshape(-1), minlength=module.num_experts).float().cpu()

        return record

    @torch.no_grad()
    def rebalance(self, rate: float) -> None:
        """Move each correction bias by `rate` towards equal load (raise under-used experts), then reset counts."""
        for router, counts in zip(self.routers, self.counts, strict=True):
            if counts.sum() > 0:
                router.e_score_correction_bias += rate * torch.sign(counts.mean() - counts)
            counts.zero_()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _draw_step(settings: TrainSettings, counter: int) -> tuple[list[shapesworld.Example], int]:
    """The step's examples: `mix` maps a family ("text": its tasks drawn at random) or a "family/task" to a count."""
    examples = []
    for key, count in settings.mix.items():
        family, _, task = key.partition("/")
        for _ in range(count):
            seed = shapesworld.train_seed(settings.seed, counter)
            examples.append(shapesworld.sample(seed, family=family, task=task or None))
            counter += 1
    return examples, counter


def _families(settings: TrainSettings) -> list[str]:
    return list(dict.fromkeys(key.partition("/")[0] for key in settings.mix))


def pretrain_encoders(lab, heads: TokenHeads, settings: TrainSettings, counter: int, progress: bool = True) -> int:
    """Warm up the vision tower and its projector alone on the per-token read-outs (`supervision.TokenHeads`).

    The release's encoders arrive pretrained; the twin's start from scratch. Inside the full objective alone the ViT
    learns colour, position and motion but never shape: a twin trained that way answered every shape question at
    chance (36% of 3 classes), and a linear probe found the shape on only 56% of its shape-covered image tokens.
    Trained alone, with no LLM in the step (0.13 s against 0.83 s for a full step), the tower's per-token shape
    read-out climbs from 43% after 250 steps of 16 images to 88% after 2,000; the twin trained after this warm-up
    answers shape questions at 100%. Constant learning rate `lr` after `encoder_warmup` linear steps; examples continue
    the run's training seeds from `counter`.

    Returns:
        the next example counter.
    """
    from tqdm.auto import tqdm

    model = lab.model
    names = ("vision_model.", "multi_modal_projector.")
    params = [p for n, p in model.named_parameters() if n.startswith(names)] + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.98), weight_decay=settings.weight_decay)
    encoder_settings = TrainSettings(seed=settings.seed, mix=settings.encoder_mix)
    for step in tqdm(range(settings.encoder_steps), desc="encoders", disable=not progress, mininterval=2.0):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / settings.encoder_warmup)
        examples, counter = _draw_step(encoder_settings, counter)
        prepared = batching.prepare(lab, examples)
        loss = heads.loss(prepared, batching.encode_batch(model, [item.prompt for item in prepared]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.clip)
        optimizer.step()
    return counter


def _evs_rates(examples, settings: TrainSettings, rng: np.random.Generator) -> list[float]:
    rates = []
    for example in examples:
        pruned = example.video is not None and rng.random() < settings.evs_probability
        rates.append(float(rng.uniform(*settings.evs_rates)) if pruned else 0.0)
    return rates


def _valid_positions(batch: batching.Batch) -> torch.Tensor:
    length = batch.embeds.shape[1]
    return (torch.arange(length)[None, :] < batch.lengths[:, None]).reshape(-1)


def train(
    out: str | Path, settings: TrainSettings | None = None, progress: bool = True, evaluate_examples: int = 200
) -> dict:
    """Train the twin and save it as a checkpoint directory with its loss curve and model card.

    Args:
        out: directory to write (created): config, safetensors (float16), tokenizer, processor configs,
            loss_curve.csv, loss_curve.png, README.md.
        settings: `TrainSettings` (defaults: the shipped run).
        progress: show a tqdm bar.
        evaluate_examples: held-out examples per family to evaluate the saved checkpoint on for the model card
            (0: skip).
    Returns:
        summary dict: settings, wall time, final loss, examples seen; with `evaluate_examples`, also "report"
        (`model_card.evaluation_report`) and "accuracy" (its no-reduction table).
    """
    from tqdm.auto import tqdm

    settings = settings or TrainSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng([settings.seed, 7])
    previous, appended = None, 0
    if settings.init_from:
        from ..lab import load as load_lab
        from .vocabulary import extend

        lab = load_lab(settings.init_from, progress=False)
        previous = read_training_record(lab.source.path)
        appended = extend(lab.processor, lab.model.get_input_embeddings().num_embeddings)
    else:
        lab = build_twin(seed=settings.seed, for_training=True)
    before = None
    if settings.init_from and evaluate_examples:  # the checkpoint it starts from, on the same held-out examples
        from .model_card import evaluation_report

        before = evaluation_report(lab, n=evaluate_examples, progress=progress, reduced=False)
    model = lab.model.eval()
    heads = TokenHeads(model.config.text_config.hidden_size, seed=settings.seed)
    event_heads = EventHeads(model.config.text_config.hidden_size, seed=settings.seed)
    named = [*model.named_parameters(), *(("heads." + n, p) for n, p in heads.named_parameters())]
    if settings.event_supervision:
        named += [("event_heads." + n, p) for n, p in event_heads.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embeddings" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.98),
    )
    load = ExpertLoad(model.language_model)
    curve = []
    started = time.perf_counter()
    counter = pretrain_encoders(lab, heads, settings, 0, progress) if settings.encoder_steps else 0
    encoder_seconds = time.perf_counter() - started
    bar = tqdm(range(settings.steps), desc="train-toy", disable=not progress, mininterval=2.0)
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, settings)
            examples, counter = _draw_step(settings, counter)
            prepared = batching.prepare(lab, examples)
            rates = _evs_rates(examples, settings, rng)
            total, count, family_losses = 0.0, 0, {}
            optimizer.zero_grad(set_to_none=True)
            for family in _families(settings):
                chosen = [i for i, example in enumerate(examples) if example.family == family]
                if not chosen:
                    continue
                batch = batching.build_batch(model, [prepared[i] for i in chosen], [rates[i] for i in chosen])
                load.valid = _valid_positions(batch)
                events = settings.event_supervision and family in shapesworld.TIERS["hard"]
                if events:
                    layers = (TIME_LAYER, HIDDEN_LAYER) if settings.time_supervision else (HIDDEN_LAYER,)
                    logits, hidden = batching.answer_logits_and_hidden(model, batch, layers)
                else:
                    logits = batching.answer_logits(model, batch)
                loss_sum = answer_loss(logits, batch, settings.label_smoothing)
                family_losses[family] = loss_sum.item() / len(batch.loss_targets)
                objective = loss_sum / settings.examples_per_step
                if events:
                    event_loss = event_heads.loss(
                        [prepared[i] for i in chosen], batch.keeps, hidden, timing=settings.time_supervision
                    )
                    family_losses[f"readouts_{family}"] = event_loss.item()
                    weight = settings.event_supervision * len(chosen) / settings.examples_per_step
                    objective = objective + weight * event_loss
                if settings.token_supervision and family != "text":
                    token_loss = heads.loss([prepared[i] for i in chosen], batch.encoded)
                    family_losses[f"tokens_{family}"] = token_loss.item()
                    objective = (
                        objective + settings.token_supervision * token_loss * len(chosen) / settings.examples_per_step
                    )
                objective.backward()
                total += loss_sum.item()
                count += len(batch.loss_targets)
            torch.nn.utils.clip_grad_norm_([p for _, p in named], settings.clip)
            optimizer.step()
            load.rebalance(settings.bias_rate)
            loss = total / count
            curve.append(
                {
                    "step": step,
                    "loss": loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - started,
                    **{f"loss_{name}": value for name, value in family_losses.items()},
                }
            )
            bar.set_postfix(loss=f"{np.mean([row['loss'] for row in curve[-20:]]):.3f}", refresh=False)
            if settings.save_every and (step + 1) % settings.save_every == 0 and step + 1 < settings.steps:
                save_checkpoint(lab, out / f"step-{step + 1}")
    finally:
        load.close()
        torch.set_num_threads(previous_threads)
    wall = time.perf_counter() - started
    save_checkpoint(lab, out)
    write_curve(curve, out)
    summary = {
        "settings": asdict(settings),
        "wall_seconds": wall,
        "encoder_seconds": encoder_seconds,
        "final_loss": float(np.mean([row["loss"] for row in curve[-50:]])) if curve else float("nan"),
        "examples_seen": counter,
        "preset": TWIN.name,
        "vocabulary_appended": appended,
        "previous": previous,
    }
    write_training_record(out, summary)
    if evaluate_examples:
        from ..lab import load as load_lab
        from .model_card import evaluation_report, write_evaluation, write_model_card

        shipped = load_lab(str(out), progress=False)
        summary["report"] = evaluation_report(shipped, n=evaluate_examples, progress=progress)
        if before is not None:
            summary["report"]["before"] = before
        summary["accuracy"] = summary["report"]["accuracy"]
        write_evaluation(out, summary["report"])
        write_model_card(out, shipped, summary)
    return summary


def answer_loss(logits: torch.Tensor, batch: batching.Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of the answer targets; word targets (`batch.loss_words`) with `label_smoothing` (the
    target spread as 1 - eps on the answer token + eps uniformly over the vocabulary), punctuation and the end of turn
    without, so a smoothed twin still stops where it should.

    Args:
        logits: `(N, vocab)` at the batch's loss positions (`batching.answer_logits`).
        batch: the batch (targets and which of them are words).
        label_smoothing: eps in [0, 1).
    Returns:
        scalar sum over the N targets.
    """
    exact = torch.nn.functional.cross_entropy(logits, batch.loss_targets, reduction="none")  # (N,)
    if not label_smoothing:
        return exact.sum()
    smoothed = torch.nn.functional.cross_entropy(
        logits, batch.loss_targets, reduction="none", label_smoothing=label_smoothing
    )  # (N,)
    return torch.where(batch.loss_words, smoothed, exact).sum()


TRAINING_RECORD = "training.json"


def write_training_record(out: Path, summary: dict) -> None:
    """training.json: this run's settings, wall time and final loss, and the run it continued from (if any); a "note"
    (e.g. on what else shared the machine) is kept and printed in the card after the stage's wall time."""
    import json

    keys = ("settings", "wall_seconds", "encoder_seconds", "final_loss", "examples_seen", "vocabulary_appended", "note")
    record = {key: summary[key] for key in keys if key in summary} | {"previous": summary["previous"]}
    (Path(out) / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def read_training_record(directory) -> dict | None:
    """The training.json a checkpoint directory holds, or None."""
    import json

    path = Path(directory) / TRAINING_RECORD if directory else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def save_checkpoint(lab, out: Path) -> None:
    """`save_pretrained` of model and processor; weights stored in float16 (routers in float32, as transformers keeps
    them), which `ol.load` upcasts to float32 on CPU."""
    model = lab.model
    keep_fp32 = ("gate.weight", "e_score_correction_bias")
    state = {
        name: tensor.detach().to(torch.float16)
        if tensor.is_floating_point() and not name.endswith(keep_fp32)
        else tensor.detach()
        for name, tensor in model.state_dict().items()
    }
    model.save_pretrained(out, state_dict=state)
    lab.processor.save_pretrained(out)


def write_curve(curve: list[dict], out: Path) -> None:
    """loss_curve.csv (every step) and loss_curve.png (50-step running mean)."""
    if not curve:
        return
    columns = list(dict.fromkeys(key for row in curve for key in row))
    with open(out / "loss_curve.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(curve)
    plot_curve([row["loss"] for row in curve], out / "loss_curve.png")


def plot_curve(losses: list[float], path: Path, width: int = 640, height: int = 320) -> None:
    """A log-scale PNG of the running-mean loss drawn with PIL (no plotting dependency)."""
    from PIL import Image, ImageDraw

    window = max(1, min(50, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    values = np.log10(np.clip(smooth, 1e-4, None))
    low, high = float(values.min()), float(values.max()) + 1e-9
    margin = 40
    xs = margin + np.linspace(0, width - 2 * margin, len(values))
    ys = height - margin - (values - low) / (high - low) * (height - 2 * margin)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(180, 180, 180))
    for exponent in range(math.floor(low), math.ceil(high) + 1):  # gridlines at 1, 2 and 5 x each power of ten
        for mantissa in (1, 2, 5):
            tick = math.log10(mantissa) + exponent
            if low <= tick <= high:
                y = height - margin - (tick - low) / (high - low) * (height - 2 * margin)
                draw.line([(margin, y), (width - margin, y)], fill=(225, 225, 225))
                draw.text((4, y - 6), f"{mantissa * 10.0**exponent:g}", "black")
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 90, 200), width=2)
    draw.text((margin, 10), f"train loss ({window}-step mean), log scale: {smooth[0]:.3g} -> {smooth[-1]:.3g}", "black")
    draw.text((margin, height - margin + 8), f"0 .. {len(losses)} steps", "black")
    image.save(path)
