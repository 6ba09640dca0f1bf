"""Start-time fair queuing's turns, shared by the scheduler's workers and the rate limiter:
within a priority, flows (namespaces) take turns, whatever the backlog of one of them.

Each priority is a queue of its own with its own clock: a high-priority item granted with a
late turn must not move the clock of a lower priority past the turns of items already waiting
there (a new namespace's polls then waited behind a flood's whole backlog)."""

from __future__ import annotations


class FairTurns:
    def __init__(self, flows_kept: int) -> None:
        self._flows_kept = flows_kept  # flows past their turn are forgotten beyond this many
        self._served: dict[int, int] = {}  # priority -> the turn of the last item served
        self._last: dict[tuple[int, str], int] = {}  # (priority, flow) -> its last turn queued

    def next(self, priority: int, flow: str) -> int:
        """The turn of a new item: after the flow's last one, and no earlier than the turn being
        served, so a flow that has just arrived goes next."""
        key = (priority, flow)
        turn = max(self._served.get(priority, 0), self._last.get(key, 0)) + 1
        self._last[key] = turn
        if len(self._last) > self._flows_kept:
            self._last = {k: t for k, t in self._last.items() if t > self._served.get(k[0], 0)}
        return turn

    def served(self, priority: int, turn: int) -> None:
        self._served[priority] = max(self._served.get(priority, 0), turn)
