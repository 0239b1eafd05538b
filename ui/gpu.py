"""ZeroGPU support: ``gpu_task(duration)`` runs GPU work under ``spaces.GPU`` on a ZeroGPU Space.

On Hugging Face ZeroGPU hardware a GPU is attached only while a function decorated with
``spaces.GPU(duration=...)`` runs. Hugging Face sets ``SPACES_ZERO_GPU=true`` there and preinstalls
the ``spaces`` package (it is deliberately not in requirements.txt). Everywhere else (a laptop, a
GPU box, a CPU Space, the tests) :func:`gpu_task` returns the function unchanged: a no-op, so the
same code runs on CPU and CUDA without ZeroGPU.

What ZeroGPU does to a decorated function (``spaces`` 0.51, ``spaces/zero/wrappers.py``), and so
what a function handed to :func:`gpu_task` must respect:

* It runs in a forked worker process, and its arguments and result are pickled across. Decorate
  module-level functions that take plain values (ids, strings, paths) and return picklable ones;
  never pass an object holding locks or open handles (the recommender service): the fork inherits
  those already.
* An exception other than ``gr.Error`` reaches the caller as a bare "ZeroGPU worker error", so turn
  domain errors into ``gr.Error`` inside the decorated function to keep their message.
* The declared duration is reserved and checked against the visitor's daily GPU quota before the
  call starts, so keep it a short upper bound. It may be a function of the call's arguments.
* Decorate at import time, before ``launch()``: ZeroGPU lists decorated functions at start-up.
  Importing ``spaces`` patches torch, so it must happen before CUDA is initialised; importing
  ``ui.handlers`` (which decorates) before the service loads its encoders ensures that.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Final, TypeVar, Union

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
#: Seconds, or a function of the decorated call's arguments returning seconds (ZeroGPU's "dynamic duration").
Duration = Union[int, Callable[..., int]]

#: Set by Hugging Face on ZeroGPU Spaces.
ZERO_GPU_ENV: Final[str] = "SPACES_ZERO_GPU"


def on_zero_gpu() -> bool:
    """True on a ZeroGPU Space; the same test as ``spaces.config`` ("1", "t" or "true")."""
    return os.environ.get(ZERO_GPU_ENV, "").strip().lower() in ("1", "t", "true")


def gpu_task(duration: Duration) -> Callable[[F], F]:
    """Decorator: ``spaces.GPU(duration=duration)`` on a ZeroGPU Space with ``spaces`` installed, else a no-op.

    ``duration``: positive whole seconds, or a callable taking the decorated function's arguments and
    returning them (e.g. longer for a thorough explanation).
    """
    _check_duration(duration)
    if not on_zero_gpu():
        return _unchanged
    try:
        import spaces
    except ImportError:
        log.warning("%s is set but the 'spaces' package is not importable: GPU work runs without ZeroGPU "
                    "(Hugging Face preinstalls it on ZeroGPU Spaces; elsewhere unset %s)", ZERO_GPU_ENV, ZERO_GPU_ENV)
        return _unchanged

    def decorate(fn: F) -> F:
        log.info("ZeroGPU: %s runs under spaces.GPU (duration %s)", fn.__name__,
                 duration if isinstance(duration, int) else "by argument")
        return spaces.GPU(duration=duration)(fn)

    return decorate


def _unchanged(fn: F) -> F:
    return fn


def _check_duration(duration: object) -> None:
    if callable(duration):
        return
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise ValueError(f"GPU duration is {duration!r}; give whole seconds >= 1 or a function returning them")
