"""The Gradio playground: ask the model about text, images, video and audio, and see inside each answer.

    omni-lab playground                          # the toy twin on http://127.0.0.1:7860
    app = omni_lab.playground.build_app(lab)     # the gr.Blocks, not launched

    app.py         build_app(lab) and launch(): layout, queue, the `/ask` endpoint
    handlers.py    module-level request handlers taking the Lab explicitly (uploads, reducers, streaming, stats)
    figures.py     the panels beside each answer, from omni_lab.widgets' figure builders
    examples.py    the shipped ShapesWorld gallery (examples/index.json);  make_examples.py  regenerates it

Importing this package is cheap; gradio loads when the app is built.
"""

from __future__ import annotations


def build_app(lab, settings=None):
    """The playground's `gr.Blocks` for `lab`, built but not launched (see `app.build_app`)."""
    from .app import build_app as _build_app

    return _build_app(lab, settings)


def launch(lab, **kwargs):
    """Build and serve the playground (see `app.launch`)."""
    from .app import launch as _launch

    return _launch(lab, **kwargs)


__all__ = ["build_app", "launch"]
