"""Child processes of a hub or of ``agenthub up``."""

from __future__ import annotations

import contextlib
import signal


def die_with_parent() -> None:
    """In the child (a ``preexec_fn``): get SIGTERM if the parent dies without cleaning up
    (Linux ``PR_SET_PDEATHSIG``; a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
