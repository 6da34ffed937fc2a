"""The one partition of token-map rows (omni_lab/partition.py): every key checked against a hand-built map, the
label format, restriction, positions, and the errors a user meets."""

import numpy as np
import pytest

import omni_lab as ol
from omni_lab.partition import GroupBy, partition
from omni_lab.token_map import TokenMap, _empty_columns


def _map() -> TokenMap:
    """Rows, in order: 2 text (special, then ' red'), a 4 x 6 image (10 x 10 px cells, its last grid row pruned),
    1 text (' up'), a 2-tubelet video of 2 x 2 cells (frames 0-1 at 0.0-0.5 s, 2-3 at 1.0-1.5 s), 5 audio tokens
    (80 ms each), 2 generated."""
    count = 2 + 24 + 1 + 8 + 5 + 2
    columns = _empty_columns(count)
    columns["position"][:] = np.arange(count)
    columns["text"][:] = ["<|im_start|>", " red"] + [""] * 24 + [" up"] + [""] * 13 + ["a", "b"]
    columns["special"][0] = True
    columns["item"][:2] = 0
    image = slice(2, 26)
    columns["modality"][image] = "image"
    columns["item"][image] = 0
    row, col = np.divmod(np.arange(24), 6)
    columns["row"][image], columns["col"][image] = row, col
    columns["x0"][image], columns["x1"][image] = col * 10.0, col * 10.0 + 10
    columns["y0"][image], columns["y1"][image] = row * 10.0, row * 10.0 + 10
    columns["kept"][20:26] = False
    columns["item"][26] = 1
    video = slice(27, 35)
    columns["modality"][video] = "video"
    columns["item"][video] = 0
    cell_row, cell_col = np.divmod(np.arange(8) % 4, 2)
    columns["row"][video], columns["col"][video] = cell_row, cell_col
    columns["x0"][video], columns["x1"][video] = cell_col * 32.0, cell_col * 32.0 + 32
    columns["y0"][video], columns["y1"][video] = cell_row * 32.0, cell_row * 32.0 + 32
    columns["tubelet"][video] = np.repeat([0, 1], 4)
    columns["frames"][27:31] = [(0, 1)] * 4
    columns["frames"][31:35] = [(2, 3)] * 4
    columns["t0"][video] = np.repeat([0.0, 1.0], 4)
    columns["t1"][video] = np.repeat([0.5, 1.5], 4)
    audio = slice(35, 40)
    columns["modality"][audio] = "audio"
    columns["item"][audio] = 0
    columns["t0"][audio] = np.arange(5) * 0.08
    columns["t1"][audio] = np.arange(1, 6) * 0.08
    columns["modality"][40:] = "generated"
    columns["item"][40:] = 0
    columns["position"][~columns["kept"]] = -1
    columns["position"][columns["kept"]] = np.arange(int(columns["kept"].sum()))
    return TokenMap(columns)


def _rows(unit) -> list[int]:
    return np.flatnonzero(unit.rows).tolist()


def test_modality_and_item_units_by_hand():
    token_map = _map()
    by_modality = token_map.partition("modality")
    assert by_modality.labels == ["text", "image", "video", "audio", "generated"]
    assert _rows(by_modality[0]) == [0, 1, 26]
    by_item = token_map.partition("item")
    assert by_item.labels == ["text 0", "image 0", "text 1", "video 0", "audio 0", "generated"]
    assert _rows(by_item[2]) == [26] and _rows(by_item[3]) == list(range(27, 35))
    assert by_item[3].frames == (0, 1, 2, 3)  # 0-based positions within the clip
    assert by_item.is_disjoint() and by_item.masks.sum(0).tolist() == [1] * len(token_map)


def test_region_cells_hold_the_box_centres_by_hand():
    """4 x 6 cells of 10 px: a 2 x 2 grid puts grid rows 0-1 / 2-3 and cols 0-2 / 3-5 together; pruned rows stay in
    their cells (the extent counts them), and the video's cells span both tubelets."""
    token_map = _map()
    regions = token_map.partition("region", grid=(2, 2))
    image = {unit.region: _rows(unit) for unit in regions.only("image")}
    for (cell_row, cell_col), rows in image.items():
        expected = [2 + 6 * r + c for r in range(4) for c in range(6) if (r // 2, c // 3) == (cell_row, cell_col)]
        assert rows == expected
    assert regions.only("image")[3].box == (30.0, 20.0, 60.0, 40.0)
    video = regions.only("video")
    assert [unit.label for unit in video] == [f"video 0 region {r},{c}" for r in range(2) for c in range(2)]
    assert [_rows(unit) for unit in video] == [[27, 31], [28, 32], [29, 33], [30, 34]]
    three = token_map.partition("region", grid=(1, 3)).only("image")
    assert [_rows(unit)[:2] for unit in three] == [[2, 3], [4, 5], [6, 7]]


def test_tubelet_frame_and_combined_keys_by_hand():
    token_map = _map()
    tubelets = token_map.partition("tubelet").only("video")
    assert tubelets.labels == ["video 0 tubelet 0", "video 0 tubelet 1"]
    assert tubelets[1].frames == (2, 3) and tubelets[1].seconds == (1.0, 1.5)
    frames = token_map.partition("frame")
    video = frames.only("video")
    assert video.labels == [f"video 0 frame {f}" for f in range(4)]
    assert _rows(video[0]) == _rows(video[1]) == list(range(27, 31))  # two frames share a tubelet's tokens
    assert video[3].seconds == (1.5, 1.5) and not frames.is_disjoint()
    with pytest.raises(ol.OmniLabInputError, match="share no token.*'tubelet'"):
        frames.require_disjoint("attention mass")
    both = token_map.partition(("tubelet", "region"), grid=2).only("video")
    assert both.labels[:2] == ["video 0 tubelet 0 region 0,0", "video 0 tubelet 0 region 0,1"]
    assert [_rows(unit) for unit in both] == [[row] for row in range(27, 35)]


def test_audio_windows_text_tokens_and_words_by_hand():
    token_map = _map()
    windows = token_map.partition("audio_window", seconds=0.2).only("audio")
    assert windows.labels == ["audio 0 0.00-0.20 s", "audio 0 0.20-0.40 s"]  # starts 0, .08, .16 | .24, .32
    assert [_rows(unit) for unit in windows] == [[35, 36, 37], [38, 39]]
    tokens = token_map.partition("text_token").only("text")
    assert tokens.labels == ["text 0", "text 1 ' red'", "text 26 ' up'"]  # the special token stays with its span
    words = token_map.partition("word").only("text")
    assert words.labels == ["text 0", "text 1 ' red'", "text 26 ' up'"]


def test_restrict_positions_and_table():
    token_map = _map()
    regions = token_map.partition("region", grid=(2, 2))
    kept = regions.restrict(token_map["kept"])
    assert len(kept) == len(regions)  # no cell is wholly pruned
    assert int(kept.masks.sum()) == int(token_map["kept"].sum())
    ids = kept.position_ids(token_map)
    assert len(ids) == token_map.num_positions and (ids >= 0).all()
    for position, unit in enumerate(ids):
        assert kept[unit].rows[token_map.position_rows()[position]]
    table = regions.table()
    assert table.loc[1, "label"] == "image 0 region 0,0" and table.loc[1, "region"] == "0,0"
    assert table["rows"].sum() == len(token_map)
    groups = token_map.partition({"left": {"modality": "image"}, "sound": token_map.rows(modality="audio")})
    assert groups.labels == ["left", "sound"] and groups[1].modality == "audio"
    assert groups.complete().labels[-1] == "rest"


@pytest.mark.parametrize(
    ("by", "options", "message"),
    [
        ("pixels", {}, "group by one of"),
        (("frame", "region"), {}, "'frame' groups on its own"),
        ("region", {"grid": (0, 2)}, "grid="),
        ("audio_window", {"seconds": -1}, "seconds="),
        ({}, {}, "has no groups"),
        ({"none": np.zeros(3, dtype=bool)}, {}, "bool mask over"),
    ],
)
def test_bad_groupings_are_refused_naming_the_input(by, options, message):
    with pytest.raises(ol.OmniLabInputError, match=message):
        partition(_map(), by, **options)


def test_group_by_is_the_same_grouping_before_a_token_map():
    spec = GroupBy.of("region", grid=4)
    assert spec.grid == (4, 4) and spec.to_dict() == {"by": "region", "grid": [4, 4], "seconds": 1.0}
    assert spec.apply(_map()).labels == partition(_map(), "region", grid=(4, 4)).labels
    assert GroupBy.of(("item", "tubelet")).keys == ("tubelet",)


def test_a_partition_is_computed_once_per_token_map_and_user_groups_each_time(monkeypatch):
    import omni_lab.partition as partition_module

    calls = []
    keyed = partition_module._keyed_units
    monkeypatch.setattr(partition_module, "_keyed_units", lambda *args: calls.append(args[1]) or keyed(*args))
    token_map, other = _map(), _map()
    first = token_map.partition("tubelet")
    assert token_map.partition("tubelet") is first and GroupBy.of("tubelet").apply(token_map) is first
    assert calls == [("tubelet",)]
    assert other.partition("tubelet") is not first and len(calls) == 2  # another map computes its own
    assert other.partition("tubelet").labels == first.labels
    token_map.partition("tubelet", grid=(4, 4))  # another grouping
    assert len(calls) == 3
    groups = {"red": np.arange(len(token_map)) == 1}
    assert token_map.partition(groups) is not token_map.partition(groups)  # {name: mask} groups: each time
