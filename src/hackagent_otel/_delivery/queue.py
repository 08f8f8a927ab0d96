"""PartitionedQueue: the records waiting in memory, one partition per sender thread.

A record's partition is chosen by its ordering key, so records of one result share a
partition and leave in submission order, while other results travel in parallel. Each
record carries its submission number (``seq``); whatever leaves the queue for the
outbox is taken whole and merged back into submission order.

A record that *provides* an id to later ones (a goal's Result creation) leaves its
partition before the records of other keys queued ahead of it: pipeline code may be
waiting for that id, and order only holds per key. It never overtakes a record of its
own key (such a provider stays in line). A key that starts with a provider is placed
on the partition with the fewest providers, not by its hash, so the creations of an
attack's goals spread evenly over the senders.

It also knows what is *not* settled yet: queued, in flight on a sender (``busy``), or
taken out on its way to the outbox (``transit``), which is what ``force_flush`` waits
for. No threads and no locks in here: the delivery service uses it under its own lock.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass

from hackagent_otel._records import Call

__all__ = ["MAX_PLACED", "Item", "PartitionedQueue"]

#: Keys placed by load that are remembered (a goal each); far more than run at once.
MAX_PLACED = 100_000


@dataclass(slots=True)
class Item:
    """One call waiting to be delivered, with its submission number."""

    seq: int
    call: Call


class PartitionedQueue:
    """At most ``capacity`` queued items over ``partitions`` FIFO partitions."""

    def __init__(self, partitions: int, capacity: int) -> None:
        if partitions < 1 or capacity < 1:
            raise ValueError("partitions and capacity must be >= 1")
        self.partitions = partitions
        self.capacity = capacity
        self._parts: list[deque[Item]] = [deque() for _ in range(partitions)]
        #: Providers first in their key, per partition: they leave before ``_parts``.
        self._first: list[deque[Item]] = [deque() for _ in range(partitions)]
        #: Keys placed by load rather than by hash (see ``_place``), oldest first.
        self._placed: OrderedDict[str, int] = OrderedDict()
        self._busy: list[Item | None] = [None] * partitions
        self._transit: list[int] = []  # the lowest seq of each batch on its way out
        self._size = 0

    def partition_of(self, ordering_key: str) -> int:
        """The partition (and so the sender thread) of an ordering key."""
        placed = self._placed.get(ordering_key)
        return placed if placed is not None else hash(ordering_key) % self.partitions

    def _place(self, ordering_key: str) -> int:
        """The partition of a key that starts with a provider: the one holding the fewest
        providers now, so creations a pipeline may wait for spread evenly over the
        senders (a hash put 4 or 5 of 20 on one of 8). The key keeps it from then on."""
        placed = self._placed.get(ordering_key)
        if placed is not None:
            return placed
        hashed = hash(ordering_key) % self.partitions
        busy = self._busy[hashed]
        if self._parts_have_key(hashed, ordering_key) or (
            busy is not None and busy.call.ordering_key == ordering_key
        ):
            return hashed  # the key is already under way there: it stays in line
        part = min(
            range(self.partitions),
            key=lambda i: (len(self._first[i]) + (self._busy[i] is not None), len(self._parts[i])),
        )
        self._placed[ordering_key] = part
        while len(self._placed) > MAX_PLACED:
            self._placed.popitem(last=False)
        return part

    def offer(self, item: Item) -> int | None:
        """Queue ``item`` behind its key's earlier ones; its partition, or ``None`` if full."""
        if self._size >= self.capacity:
            return None
        key = item.call.ordering_key
        part = self._place(key) if item.call.provides is not None else self.partition_of(key)
        queued = self._parts[part]
        if item.call.provides is not None and not any(it.call.ordering_key == key for it in queued):
            self._first[part].append(item)
        else:
            queued.append(item)
        self._size += 1
        return part

    def has_work(self, part: int) -> bool:
        """Whether partition ``part`` has a queued item."""
        return bool(self._first[part] or self._parts[part])

    def take(self, part: int) -> Item:
        """The next item of ``part`` (a provider first), now in flight on its sender."""
        first = self._first[part]
        item = first.popleft() if first else self._parts[part].popleft()
        self._size -= 1
        self._busy[part] = item
        return item

    def settle(self, part: int, item: Item) -> None:
        """``item``'s flight on ``part`` is over (delivered, rejected, or persisted)."""
        if self._busy[part] is item:
            self._busy[part] = None

    def hand_back(self, part: int, item: Item, *, requeue: bool = True) -> None:
        """End ``item``'s flight; with ``requeue``, back at the front of its partition."""
        self.settle(part, item)
        if requeue:
            self._line_of(item, part).appendleft(item)
            self._size += 1

    def _line_of(self, item: Item, part: int) -> deque[Item]:
        """Where a taken item goes back to: the providers' line, or its partition's."""
        first = self._first[part]
        return (
            first
            if item.call.provides is not None
            and not self._parts_have_key(part, item.call.ordering_key)
            else self._parts[part]
        )

    def _parts_have_key(self, part: int, key: str) -> bool:
        return any(it.call.ordering_key == key for it in self._parts[part])

    def in_flight(self) -> list[Item]:
        """The items senders hold right now."""
        return [item for item in self._busy if item is not None]

    def take_all(self) -> list[Item]:
        """Every queued item, in submission order, marked in transit until
        :meth:`end_transit` (see :meth:`lowest_unsettled`)."""
        if not self._size:
            return []
        items = list(heapq.merge(*self._first, *self._parts, key=lambda it: it.seq))
        for line in (*self._first, *self._parts):
            line.clear()
        self._size = 0
        self.begin_transit(items)
        return items

    def begin_transit(self, items: list[Item]) -> None:
        """``items`` (in seq order) are on their way to the outbox."""
        if items:
            self._transit.append(items[0].seq)

    def end_transit(self, items: list[Item]) -> None:
        """``items`` reached the outbox, or came back, or were dropped."""
        if items:
            self._transit.remove(items[0].seq)

    def put_back(self, items: list[Item]) -> None:
        """Return ``items`` (in seq order, taken by :meth:`take_all`) to their partitions'
        fronts, ahead of anything queued since; may exceed the capacity for a moment."""
        for item in reversed(items):
            part = self.partition_of(item.call.ordering_key)
            self._line_of(item, part).appendleft(item)
        self._size += len(items)

    def lowest_unsettled(self) -> int | None:
        """The lowest seq still queued, in flight or in transit (``None``: all settled)."""
        return min(
            [line[0].seq for line in (*self._first, *self._parts) if line]
            + [b.seq for b in self._busy if b is not None]
            + self._transit,
            default=None,
        )

    def __len__(self) -> int:
        return self._size
