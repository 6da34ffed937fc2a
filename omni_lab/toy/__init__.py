"""The toy twin: Nemotron 3 Nano Omni's architecture at a few million parameters, trained on ShapesWorld.

    shapesworld.py    the synthetic world: seeded examples with media, question, answer and ground truth
    events.py         its hard tier: long, mostly still clips whose answer lies in brief events
    canvas.py         pictures (textured backgrounds, shapes);  sounds.py  beeps
    architecture.py   the twin's config and processor (transformers' own classes)
    vocabulary.py     its tokenizer (release special tokens, ShapesWorld BPE)
    batching.py       training batches built through the same prompt and merge code as `Lab.run`
    supervision.py    per-token auxiliary targets from the ground truth (training only; event_supervision.py
                      the hard tier's)
    training.py       `omni-lab train-toy`;  evaluation.py, ablation.py  `omni-lab eval-toy`
    model_card.py     the checkpoint's README.md;  commands.py  the CLI handlers
    assets/omni-toy/  the shipped checkpoint, loaded by `ol.load("toy")` (stages 1-2: the basic tier)
    assets/omni-toy-hard/  stage 3 continued from it on the hard tier, loaded by `ol.load("toy-hard")`

Nothing is imported here, so `import omni_lab.toy` stays cheap.
"""
