"""Imported only by the parser fork server (as a preload): it dies with the process it serves.

Without this, a `serve` killed with SIGKILL would leave its fork server, and the parser
processes waiting under it, running for good. Importing this module anywhere else would
tie that process to its parent, so nothing else imports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the server's own end-of-parent check remains
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


_die_with_parent()
