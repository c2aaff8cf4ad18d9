"""pytest plugin for the long reliability run: sets every collected test module's ``TRIALS``
constant (the kill tests of des-packer, des-storage-s3 and repack read it at run time) to
``DES_KILL_TRIALS``. Loaded by run_long.py with ``-p trials_plugin``."""

from __future__ import annotations

import os
from typing import Any


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    trials = int(os.environ["DES_KILL_TRIALS"])
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "TRIALS"):
            module.TRIALS = trials
