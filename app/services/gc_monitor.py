"""Times the garbage collector's pauses, which stop the event loop and so every client."""

from __future__ import annotations

import gc
import time
from typing import Any


class GcMonitor:
    """Counts collections per generation and their total and longest pause.

    A full collection walks every tracked object, and with a task, a protocol and a scope per
    connection that is tens of thousands of objects per thousand clients: the pause shows up
    directly in broadcast latency. /stats reports these figures per worker.
    """

    def __init__(self) -> None:
        self._count = [0, 0, 0]
        self._total = [0.0, 0.0, 0.0]
        self._longest = [0.0, 0.0, 0.0]
        self._began = 0.0
        self._installed = False
        self._frozen = 0

    def start(self) -> None:
        """Begin timing collections."""
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True

    def stop(self) -> None:
        """Stop timing collections."""
        if self._installed:
            gc.callbacks.remove(self._on_gc)
            self._installed = False

    def froze(self) -> None:
        """Note how many objects ``gc.freeze()`` just moved out of every collection.

        Read once here rather than in every :meth:`snapshot` (each worker's heartbeat,
        every second): ``gc.get_freeze_count()`` walks the whole frozen list, tens of
        thousands of objects, each time.
        """
        self._frozen = gc.get_freeze_count()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._began
        self._count[generation] += 1
        self._total[generation] += pause
        if pause > self._longest[generation]:
            self._longest[generation] = pause

    def snapshot(self) -> dict[str, Any]:
        """Per generation: collections, total and longest pause in milliseconds."""
        return {
            f"gen{g}": {
                "collections": self._count[g],
                "total_ms": round(self._total[g] * 1000, 3),
                "longest_ms": round(self._longest[g] * 1000, 3),
            }
            for g in range(3)
        } | {"frozen_objects": self._frozen, "thresholds": list(gc.get_threshold())}
