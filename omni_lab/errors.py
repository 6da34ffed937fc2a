"""The two error types omni-lab raises for things a user can fix.

`OmniLabInputError` is for anything passed wrongly (a file, a format, a size, a prompt); `OmniLabModelError` is for
model sources (missing files, an unsupported quantisation on this device, a meta-device model asked to run).
Messages name the input and say what to do, so nobody has to read a traceback from deep inside torch.
"""

from __future__ import annotations


class OmniLabInputError(ValueError):
    """A user input (media file, array, prompt, argument) that omni-lab cannot use as given."""


class OmniLabModelError(RuntimeError):
    """A model source that cannot be loaded or run here (missing files, quantisation, device)."""
