"""EVS speed-up against the ideal token ratio, omni-lab's run path vs transformers' own forward, side by side.

    python benchmarks/bench_reduction.py [--repeats 7] [--threads 2] [--frames 32]

On random:small with a video-dominated prompt (>= 80 % video tokens, >= 1K tokens), for EVS rates 0, 0.5, 0.75, two
spans are timed, each the same on both sides:

  LLM span (media already encoded, to the first token):
      embedding lookup -> scatter of the video features -> EVS -> LLM prefill (with its cache) -> LM head on the
      last position -> first token.
      omni-lab:     lab.run(prompt, max_new_tokens=1, reducer=EVS(rate), encoded=lab.encode(prompt)), wall time
                    (also covers omni-lab's token map and ledger, which transformers does not build);
      transformers: model(input_ids, mm_encoder_outputs={"video": ...}, use_cache=True, logits_to_keep=1) with
                    model.video_pruning_rate = rate, then the argmax, wall time.
  TTFT (end-to-end time to first token: encode + reduce + prefill):
      the same calls starting from the processor's tensors: lab.run(prompt, max_new_tokens=1, reducer=EVS(rate))
      and model(input_ids, pixel_values_videos=..., use_cache=True, logits_to_keep=1).

Reported per rate: LLM tokens kept, the ideal ratio (tokens at rate 0 / tokens at the rate), speed-up (time at rate 0
/ time at the rate), efficiency (speed-up / ideal ratio), omni-lab's time over transformers' time for the same span,
and the reducer's own time (`reduce_s`) as a share of omni-lab's LLM span. The encoders are not reduced by EVS, so
the TTFT speed-up stays below the ideal ratio by design: it is what a user sees. Medians over repeats that alternate
between configurations, so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RATES = (0.0, 0.5, 0.75)
SIDES = ("ours_llm", "theirs_llm", "ours_ttft", "theirs_ttft", "reduce")


def main() -> None:
    import numpy as np
    import torch

    import omni_lab as ol
    from omni_lab.media import VideoClip

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lab = ol.load("random:small")
    model = lab.model
    rng = np.random.default_rng(0)
    frames = (rng.random((args.frames, 128, 128, 3)) * 255).astype(np.uint8)
    frames[1::2] = frames[::2]  # some temporal redundancy, as real video has
    prompt = lab.prompt("What happens in the video?", video=VideoClip(frames))  # no fps: short frame labels
    share = prompt.token_map.counts()["video"] / len(prompt)
    print(
        f"random:small, {len(prompt)} prompt tokens, {share:.0%} video, {args.threads} thread(s), {args.repeats} repeats"
    )

    input_ids, pixels = prompt.inputs["input_ids"], prompt.inputs["pixel_values_videos"]
    encoded = lab.encode(prompt)
    with torch.inference_mode():
        video_outputs = model.get_video_features(pixels)

    def reducer_for(rate):
        return ol.reducers.EVS(rate) if rate else None

    def ours_llm(rate):
        started = time.perf_counter()
        run = lab.run(prompt, max_new_tokens=1, reducer=reducer_for(rate), encoded=encoded)
        return time.perf_counter() - started, run

    def ours_ttft(rate):
        started = time.perf_counter()
        lab.run(prompt, max_new_tokens=1, reducer=reducer_for(rate))
        return time.perf_counter() - started

    def theirs(rate, **media):
        model.video_pruning_rate = rate
        with torch.inference_mode():
            started = time.perf_counter()
            output = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **media)
            token = int(output.logits[0, -1].argmax())
            return time.perf_counter() - started, token

    def theirs_llm(rate):
        return theirs(rate, mm_encoder_outputs={"video": video_outputs})

    def theirs_ttft(rate):
        return theirs(rate, pixel_values_videos=pixels)[0]

    tokens, same_first_token = {}, {}
    for rate in RATES:  # warm-up, and both sides must feed the LLM the same number of tokens
        _, run = ours_llm(rate)
        _, their_token = theirs_llm(rate)
        ours_ttft(rate), theirs_ttft(rate)
        model.video_pruning_rate = rate
        with torch.inference_mode():
            their_length = model(input_ids=input_ids, mm_encoder_outputs={"video": video_outputs}).logits.shape[1]
        tokens[rate] = run.token_map.num_positions - len(run.generated_ids)
        assert their_length == tokens[rate], (rate, their_length, tokens[rate])
        same_first_token[rate] = run.generated_ids[0] == their_token
    samples = {side: {rate: [] for rate in RATES} for side in SIDES}
    for _ in range(args.repeats):
        for rate in RATES:
            elapsed, run = ours_llm(rate)
            samples["ours_llm"][rate].append(elapsed)
            samples["reduce"][rate].append(run.timings["reduce_s"])
            samples["theirs_llm"][rate].append(theirs_llm(rate)[0])
            samples["ours_ttft"][rate].append(ours_ttft(rate))
            samples["theirs_ttft"][rate].append(theirs_ttft(rate))
    model.video_pruning_rate = lab.config.video_pruning_rate
    median = {
        side: {rate: statistics.median(values) for rate, values in table.items()} for side, table in samples.items()
    }

    def speedup(side, rate):
        return median[side][0.0] / median[side][rate]

    print("\nLLM span: embedding lookup + scatter + EVS + prefill + LM head (last position) -> first token")
    print(
        f"{'rate':>5}{'tokens':>8}{'ideal':>7} |{'omni-lab s':>11}{'speed-up':>9}{'effic.':>7} |"
        f"{'transformers s':>15}{'speed-up':>9}{'effic.':>7} |{'ours/theirs':>12}{'reduce %':>9}{'same 1st':>9}"
    )
    for rate in RATES:
        ideal = tokens[0.0] / tokens[rate]
        ours, theirs_ = speedup("ours_llm", rate), speedup("theirs_llm", rate)
        print(
            f"{rate:>5.2f}{tokens[rate]:>8}{ideal:>7.2f} |{median['ours_llm'][rate]:>11.3f}{ours:>9.2f}"
            f"{ours / ideal:>7.2f} |{median['theirs_llm'][rate]:>15.3f}{theirs_:>9.2f}{theirs_ / ideal:>7.2f} |"
            f"{median['ours_llm'][rate] / median['theirs_llm'][rate]:>12.2f}"
            f"{median['reduce'][rate] / median['ours_llm'][rate]:>9.1%}{str(same_first_token[rate]):>9}"
        )
    print("\nTTFT end to end: encode + reduce + prefill -> first token")
    print(
        f"{'rate':>5}{'ideal':>7} |{'omni-lab s':>11}{'speed-up':>9}{'/ideal':>7} |"
        f"{'transformers s':>15}{'speed-up':>9}{'/ideal':>7} |{'ours/theirs':>12}"
    )
    for rate in RATES:
        ideal = tokens[0.0] / tokens[rate]
        ours, theirs_ = speedup("ours_ttft", rate), speedup("theirs_ttft", rate)
        print(
            f"{rate:>5.2f}{ideal:>7.2f} |{median['ours_ttft'][rate]:>11.3f}{ours:>9.2f}{ours / ideal:>7.2f} |"
            f"{median['theirs_ttft'][rate]:>15.3f}{theirs_:>9.2f}{theirs_ / ideal:>7.2f} |"
            f"{median['ours_ttft'][rate] / median['theirs_ttft'][rate]:>12.2f}"
        )


if __name__ == "__main__":
    main()
