"""PartitionedQueue without threads: order per key, capacity, what is still unsettled."""

from __future__ import annotations

from hackagent_otel._delivery.queue import Item, PartitionedQueue
from hackagent_otel._records import Call


def item(seq: int, key: str) -> Item:
    return Item(seq, Call("trace", "POST", f"/result/{key}/trace", b"{}", key))


def test_items_of_one_key_share_a_partition_and_leave_in_order() -> None:
    queue = PartitionedQueue(4, 100)
    parts = {queue.offer(item(n, "a")) for n in range(5)}
    assert len(parts) == 1
    (part,) = parts
    assert part is not None
    assert [queue.take(part).seq for _ in range(5)] == [0, 1, 2, 3, 4]


def test_a_full_queue_refuses_and_keeps_what_it_has() -> None:
    queue = PartitionedQueue(2, 2)
    assert queue.offer(item(0, "a")) is not None
    assert queue.offer(item(1, "b")) is not None
    assert queue.offer(item(2, "c")) is None
    assert len(queue) == 2


def test_a_handed_back_item_goes_first_again() -> None:
    queue = PartitionedQueue(1, 10)
    queue.offer(item(0, "a"))
    queue.offer(item(1, "a"))
    first = queue.take(0)
    assert queue.in_flight() == [first]
    queue.hand_back(0, first)
    assert queue.in_flight() == []
    assert queue.take(0) is first


def test_a_handed_back_item_that_was_saved_elsewhere_is_not_queued_again() -> None:
    queue = PartitionedQueue(1, 10)
    queue.offer(item(0, "a"))
    taken = queue.take(0)
    queue.hand_back(0, taken, requeue=False)
    assert len(queue) == 0
    assert queue.lowest_unsettled() is None


def test_take_all_merges_the_partitions_in_submission_order() -> None:
    queue = PartitionedQueue(3, 100)
    for n in range(12):
        queue.offer(item(n, f"k{n % 5}"))
    assert [it.seq for it in queue.take_all()] == list(range(12))
    assert len(queue) == 0


def test_taken_items_stay_unsettled_until_their_transit_ends() -> None:
    queue = PartitionedQueue(2, 100)
    for n in range(3):
        queue.offer(item(n, "a"))
    taken = queue.take_all()
    assert queue.lowest_unsettled() == 0
    queue.end_transit(taken)
    assert queue.lowest_unsettled() is None


def test_put_back_restores_order_ahead_of_newer_items() -> None:
    queue = PartitionedQueue(1, 100)
    for n in range(3):
        queue.offer(item(n, "a"))
    taken = queue.take_all()
    queue.offer(item(3, "a"))
    queue.put_back(taken)
    queue.end_transit(taken)
    assert [queue.take(0).seq for _ in range(4)] == [0, 1, 2, 3]


def test_lowest_unsettled_counts_queued_in_flight_and_in_transit() -> None:
    queue = PartitionedQueue(2, 100)
    queue.offer(item(5, "a"))
    queue.offer(item(6, "b"))
    part = queue.partition_of("a")
    busy = queue.take(part)
    assert queue.lowest_unsettled() == 5
    queue.settle(part, busy)
    assert queue.lowest_unsettled() == 6
    queue.begin_transit([item(2, "c")])
    assert queue.lowest_unsettled() == 2


def provider(seq: int, key: str) -> Item:
    return Item(seq, Call("result_create", "POST", "/run/r/result", b"{}", key, provides=key))


def dependent(seq: int, key: str) -> Item:
    return Item(seq, Call("trace", "POST", "/result/{ref}/trace", b"{}", key, needs=key))


def test_a_provider_leaves_before_other_keys_queued_ahead_of_it() -> None:
    """Pipeline code may wait for a creation's id; order holds per key only."""
    queue = PartitionedQueue(1, 100)
    queue.offer(provider(0, "goal:a"))
    queue.offer(dependent(1, "goal:a"))
    queue.offer(dependent(2, "goal:a"))
    queue.offer(provider(3, "goal:b"))
    queue.offer(dependent(4, "goal:b"))
    assert [queue.take(0).seq for _ in range(5)] == [0, 3, 1, 2, 4]


def test_a_provider_never_overtakes_its_own_key() -> None:
    queue = PartitionedQueue(1, 100)
    queue.offer(dependent(0, "goal:a"))  # a record of its key before it: it stays in line
    queue.offer(provider(1, "goal:a"))
    queue.offer(provider(2, "goal:b"))
    assert [queue.take(0).seq for _ in range(3)] == [2, 0, 1]


def test_a_handed_back_provider_still_goes_before_its_dependents() -> None:
    queue = PartitionedQueue(1, 100)
    queue.offer(provider(0, "goal:a"))
    queue.offer(dependent(1, "goal:a"))
    taken = queue.take(0)
    queue.hand_back(0, taken)
    assert [queue.take(0).seq for _ in range(2)] == [0, 1]


def test_take_all_and_put_back_keep_providers_ahead_of_their_dependents() -> None:
    queue = PartitionedQueue(1, 100)
    for item in (provider(0, "goal:a"), dependent(1, "goal:a"), provider(2, "goal:b")):
        queue.offer(item)
    taken = queue.take_all()
    assert [it.seq for it in taken] == [0, 1, 2]
    queue.put_back(taken)
    queue.end_transit(taken)
    order = [queue.take(0).seq for _ in range(3)]
    assert order.index(0) < order.index(1)


def test_keys_that_start_with_a_provider_spread_evenly_over_the_partitions() -> None:
    queue = PartitionedQueue(8, 1000)
    parts = [queue.offer(provider(n, f"goal:{n}")) for n in range(20)]
    counts = [parts.count(i) for i in range(8)]
    assert max(counts) == 3  # 20 over 8: at most ceil(20 / 8)
    for n in range(20):  # and every later record of a key follows it there
        assert queue.offer(dependent(100 + n, f"goal:{n}")) == parts[n]
