"""Tests that need a read-only folder run their subject in a child process without root's powers."""

from __future__ import annotations

import ctypes
import os


def without_root_powers() -> None:
    """Root writes anywhere: in the child (`preexec_fn`), drop the capabilities that let it, so a read-only
    folder is one."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
