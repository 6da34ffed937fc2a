"""The toy twin: Nemotron 3 Nano Omni's architecture at a few million parameters, trained on ShapesWorld.

    shapesworld.py    the synthetic world: seeded examples with media, question, answer and ground truth
    canvas.py         pictures (textured backgrounds, shapes);  sounds.py  beeps
    architecture.py   the twin's config and processor (transformers' own classes)
    vocabulary.py     its tokenizer (release special tokens, ShapesWorld BPE)
    batching.py       training batches built through the same prompt and merge code as `Lab.run`
    supervision.py    per-token auxiliary targets from the ground truth (training only)
    training.py       `omni-lab train-toy`;  evaluation.py, ablation.py  `omni-lab eval-toy`
    model_card.py     the checkpoint's README.md;  commands.py  the CLI handlers
    assets/omni-toy/  the shipped checkpoint, loaded by `ol.load("toy")`

Nothing is imported here, so `import omni_lab.toy` stays cheap.
"""
