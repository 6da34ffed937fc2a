"""Reducers against ShapesWorld's ground truth: EVS keeps the moving object, a random control does not."""

import numpy as np

import omni_lab as ol
from omni_lab.toy import shapesworld


def moving_object_rows(df, truth, clip) -> list[int]:
    """Video rows after the first tubelet whose pixel box overlaps the target's box in that tubelet's frames."""
    rows = []
    for index, row in df[(df.modality == "video") & (df.tubelet > 0)].iterrows():
        frames = [clip.frame_indices.index(frame) for frame in row.frames]
        box = truth.boxes[frames]
        x0, y0, x1, y1 = box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()
        if row.x0 < x1 and row.x1 > x0 and row.y0 < y1 and row.y1 > y0:
            rows.append(index)
    return rows


def test_evs_keeps_more_of_the_moving_object_than_random_drop_at_the_same_budget(twin_lab):
    evs_share, random_share = [], []
    index = 0
    while len(evs_share) < 12:
        example = shapesworld.sample(shapesworld.eval_seed(0, "video", index), family="video", task="direction")
        index += 1
        if not example.truth["video"].moves:
            continue
        prompt = example.prompt(twin_lab)
        evs = ol.reducers.EVS(0.5)
        control = ol.reducers.RandomDrop.matching(evs, seed=index)
        for reducer, shares in ((evs, evs_share), (control, random_share)):
            df = twin_lab.run(prompt, max_new_tokens=0, reducer=reducer).token_map.df
            rows = moving_object_rows(df, example.truth["video"], example.video)
            assert rows, "the moving object covers some tokens after the first tubelet"
            shares.append(df.loc[rows].kept.mean())
    assert np.mean(evs_share) > np.mean(random_share) + 0.2, (np.mean(evs_share), np.mean(random_share))
