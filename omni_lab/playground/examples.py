"""The playground's shipped example gallery: ShapesWorld samples saved as files, with their known answers.

`examples/index.json` lists one example per ShapesWorld task (image, video, audio, omni = video + audio, text). Each
entry holds the question, the known answer (ShapesWorld's ground truth), the seed it was drawn from and the media
file names inside `examples/`. `python -m omni_lab.playground.make_examples` regenerates the files and the index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..modalities import MEDIA

EXAMPLES_DIR = Path(__file__).parent / "examples"
INDEX_FILE = EXAMPLES_DIR / "index.json"


@dataclass(frozen=True)
class GalleryExample:
    """One shipped example.

    Attributes:
        name: unique id, "{family}-{task}".
        family, task: the ShapesWorld family ("image", "video", "audio", "omni", "text") and task.
        question: the text to ask.
        answer: the known answer (exact match).
        seed: the ShapesWorld seed the media were drawn from.
        image, video, audio: absolute paths of the media files, or None.
    """

    name: str
    family: str
    task: str
    question: str
    answer: str
    seed: int
    image: str | None = None
    video: str | None = None
    audio: str | None = None

    def media(self) -> dict:
        """{"image": path, "video": path, "audio": path} for the media this example has."""
        return {kind: path for kind in MEDIA if (path := getattr(self, kind)) is not None}


def load_examples(directory: Path = EXAMPLES_DIR) -> list[GalleryExample]:
    """The examples listed in `directory/index.json`, with media paths made absolute.

    Args:
        directory: a folder holding `index.json` and the files it names.
    Returns:
        `GalleryExample`s in index order.
    """
    entries = json.loads((directory / "index.json").read_text())["examples"]
    examples = []
    for entry in entries:
        files = {kind: str(directory / entry[kind]) if entry.get(kind) else None for kind in MEDIA}
        examples.append(
            GalleryExample(
                name=entry["name"],
                family=entry["family"],
                task=entry["task"],
                question=entry["question"],
                answer=entry["answer"],
                seed=int(entry["seed"]),
                **files,
            )
        )
    return examples
