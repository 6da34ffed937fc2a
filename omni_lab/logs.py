"""Quiet, clear logs: transformers' notices that are expected on a CPU run are dropped; real warnings stay.

On a CPU machine transformers announces, for every process, that the Mamba-2 layers fall back to their reference
PyTorch path because `causal_conv1d` / `mamba_ssm` (CUDA-only packages) are not installed, and the release's
config.json (which still carries `torch_dtype`) triggers a deprecation notice. Neither is something an omni-lab user
can or should act on there. With a CUDA device present, the fallback notice is real advice (install the kernels for
speed) and is kept.
"""

from __future__ import annotations

import logging

_EXPECTED_EVERYWHERE = ("`torch_dtype` is deprecated",)
_EXPECTED_WITHOUT_CUDA = ("is falling back to its reference PyTorch implementation",)


class ExpectedNoticeFilter(logging.Filter):
    """Drops transformers' log records that are expected on this machine (see the module docstring)."""

    def __init__(self, cuda_available: bool):
        super().__init__()
        self.expected = _EXPECTED_EVERYWHERE + (() if cuda_available else _EXPECTED_WITHOUT_CUDA)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.expected)


def quiet_expected_warnings() -> None:
    """Install `ExpectedNoticeFilter` on transformers' log handlers (once; later calls do nothing)."""
    import torch
    from transformers.utils import logging as transformers_logging

    root = transformers_logging.get_logger()  # transformers' library root logger
    handlers = root.handlers or logging.getLogger().handlers
    for handler in handlers:
        if not any(isinstance(existing, ExpectedNoticeFilter) for existing in handler.filters):
            handler.addFilter(ExpectedNoticeFilter(torch.cuda.is_available()))
    if not any(isinstance(existing, ExpectedNoticeFilter) for existing in root.filters):
        root.addFilter(ExpectedNoticeFilter(torch.cuda.is_available()))
