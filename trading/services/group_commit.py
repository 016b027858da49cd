"""Group commit among the threads of one process: requests for one key (a book) that
arrive while a transaction of that key runs wait, and go together into the next one.

The first caller for a key leads: it runs its own request at once. Callers that arrive
while it runs wait in the key's queue; when it is done, the leader hands the lead to the
first of them, which takes the whole queue (up to `max_size()` requests) into the next
run. No caller is held back to fill a group: a lone caller's request runs at once, and
under load one commit (one lock of the book, of each balance row, ...) serves many.

What a run is, is the caller's: `run(key, requests)` returns one outcome per request, a
value or the exception that refused it (the order path's `_place_together`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any


class _Waiting:
    __slots__ = ("leads", "outcome", "ready", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.ready = threading.Event()
        self.outcome: Any = None
        self.leads = False


class GroupCommit:
    def __init__(
        self, run: Callable[[Hashable, list[Any]], list[Any]], max_size: Callable[[], int]
    ) -> None:
        self.run = run
        self.max_size = max_size
        self.queues: dict[Hashable, list[_Waiting]] = {}
        self.lock = threading.Lock()

    def place(self, key: Hashable, request: Any) -> Any:
        """Run `request` in a group of `key`'s: its outcome, or its exception raised."""
        me = _Waiting(request)
        with self.lock:
            queue = self.queues.get(key)
            if queue is None:
                self.queues[key] = []
                me.leads = True
            else:
                queue.append(me)
        if not me.leads:
            me.ready.wait()
        if me.leads:
            self._lead(key, me)
        if isinstance(me.outcome, BaseException):
            raise me.outcome
        return me.outcome

    def queued(self, key: Hashable) -> int:
        """How many callers wait in `key`'s queue."""
        with self.lock:
            return len(self.queues.get(key, ()))

    def _lead(self, key: Hashable, me: _Waiting) -> None:
        group = [me]
        try:
            with self.lock:
                queue = self.queues[key]
                taken = queue[: self.max_size() - 1]
                del queue[: len(taken)]
            group += taken
            outcomes = self.run(key, [w.request for w in group])
            for waiting, outcome in zip(group, outcomes, strict=True):
                waiting.outcome = outcome
        except BaseException as e:
            for waiting in group:
                waiting.outcome = e
            raise
        finally:
            with self.lock:
                queue = self.queues[key]
                successor = queue.pop(0) if queue else None
                if successor is None:
                    del self.queues[key]
                else:
                    successor.leads = True
            for waiting in group[1:]:
                waiting.ready.set()
            if successor is not None:
                successor.ready.set()
