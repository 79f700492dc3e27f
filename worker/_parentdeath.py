"""End this process when its parent ends, even when the parent is killed with SIGKILL (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., Any] | None = None


def _load_prctl() -> Callable[..., Any]:
    """libc's prctl, looked up once: a process forked afterwards has it at hand at once.

    The symbols of the running program include libc's, so no library is searched for:
    ctypes.util.find_library runs ldconfig in a subprocess, tens of milliseconds in every
    parser process before it is tied to its parent.
    """
    global _prctl
    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl


def die_with_parent(parent: int | None = None) -> None:
    """Arm the kernel's parent-death signal; exit now if `parent` is already gone.

    Pass the parent's pid whenever it is known: by the time this runs, the parent may have
    died and the process been adopted (by init or a subreaper), and getppid() names that one.
    """
    expected = os.getppid() if parent is None else parent
    try:
        _load_prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own broken-pipe handling remains
        return
    if os.getppid() != expected:  # the parent died before the signal was armed
        os._exit(1)
