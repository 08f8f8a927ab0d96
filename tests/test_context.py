"""TrackingContext: the original's constructor and methods; shared, thread-safe sequences."""

from __future__ import annotations

import gc
import logging
import threading
import uuid

import pytest

from hackagent_otel import TrackingContext

CANARY = "CANARY-7f3a9c"


def new_id() -> str:
    return str(uuid.uuid4())


def test_the_original_constructor_and_attributes_still_work() -> None:
    logger = logging.getLogger("pipeline")
    client = object()
    run_id, result_id = new_id(), new_id()

    context = TrackingContext(
        client=client,
        run_id=run_id,
        parent_result_id=result_id,
        logger=logger,
        sequence_counter=5,
        metadata={"attack": "pair"},
    )

    assert context.client is client
    assert context.run_id == run_id
    assert context.parent_result_id == result_id
    assert context.logger is logger
    assert context.sequence_counter == 5
    assert context.metadata == {"attack": "pair"}
    assert context.has_client


@pytest.mark.parametrize(
    ("run_id", "enabled"), [(None, False), ("", False), ("run", True), (new_id(), True)]
)
def test_a_run_id_alone_enables_tracking(run_id: str | None, enabled: bool) -> None:
    assert TrackingContext(run_id=run_id).is_enabled is enabled


def test_create_disabled_is_disabled() -> None:
    context = TrackingContext.create_disabled()

    assert not context.is_enabled
    assert not context.has_client
    assert context.run_id is None
    assert context.parent_result_id is None


def test_uuid_accessors_parse_or_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    run_id = new_id()
    good = TrackingContext(run_id=run_id, parent_result_id=run_id.upper())
    assert good.get_run_uuid() == uuid.UUID(run_id)
    assert good.get_result_uuid() == uuid.UUID(run_id)

    bad = TrackingContext(run_id="run-1", parent_result_id="result-1")
    with caplog.at_level(logging.WARNING, logger="hackagent_otel"):
        assert bad.get_run_uuid() is None
        assert bad.get_run_uuid() is None
        assert bad.get_result_uuid() is None

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "run_id 'run-1' is not a UUID" in messages[0]
    assert "parent_result_id 'result-1' is not a UUID" in messages[1]
    assert TrackingContext().get_run_uuid() is None


def test_increment_sequence_returns_the_next_number() -> None:
    context = TrackingContext(run_id="r", parent_result_id=new_id())

    assert [context.increment_sequence() for _ in range(3)] == [1, 2, 3]
    assert context.sequence_counter == 3


def test_contexts_on_the_same_result_share_one_sequence() -> None:
    result_id = new_id()
    first = TrackingContext(run_id="r", parent_result_id=result_id)
    second = TrackingContext(run_id="r", parent_result_id=result_id)
    elsewhere = TrackingContext(run_id="r", parent_result_id=new_id())

    assert first.increment_sequence() == 1
    assert second.increment_sequence() == 2
    assert first.increment_sequence() == 3
    assert elsewhere.increment_sequence() == 1


def test_a_later_context_never_reuses_numbers_of_an_earlier_one() -> None:
    result_id = new_id()
    first = TrackingContext(run_id="r", parent_result_id=result_id)
    first.increment_sequence()
    first.increment_sequence()
    del first
    gc.collect()

    later = TrackingContext(run_id="r", parent_result_id=result_id)

    assert later.increment_sequence() == 3


def test_a_higher_starting_counter_moves_the_shared_sequence_forward() -> None:
    result_id = new_id()
    first = TrackingContext(run_id="r", parent_result_id=result_id)
    first.increment_sequence()

    resumed = TrackingContext(run_id="r", parent_result_id=result_id, sequence_counter=10)

    assert first.increment_sequence() == 11
    assert resumed.increment_sequence() == 12


def test_contexts_without_a_result_count_on_their_own() -> None:
    first, second = TrackingContext(run_id="r"), TrackingContext(run_id="r")

    assert first.increment_sequence() == 1
    assert second.increment_sequence() == 1


def test_sequence_numbers_are_unique_under_concurrent_increments() -> None:
    result_id = new_id()
    contexts = [TrackingContext(run_id="r", parent_result_id=result_id) for _ in range(4)]
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(context: TrackingContext) -> None:
        barrier.wait()
        mine = [context.increment_sequence() for _ in range(500)]
        assert mine == sorted(mine)
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work, args=(contexts[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(seen) == list(range(1, 4001))


def test_changing_the_result_id_switches_to_that_results_sequence() -> None:
    result_a, result_b = new_id(), new_id()
    on_b = TrackingContext(run_id="r", parent_result_id=result_b)
    on_b.increment_sequence()
    context = TrackingContext(run_id="r", parent_result_id=result_a)
    context.increment_sequence()

    context.parent_result_id = result_b

    assert context.parent_result_id == result_b
    assert context.increment_sequence() == 2


def test_delegated_sequence_follows_the_per_goal_context() -> None:
    class GoalContext:
        sequence_counter = 7

    goal = GoalContext()
    context = TrackingContext(run_id="r", parent_result_id=new_id())
    context.delegate_sequence_to(goal)

    assert context.increment_sequence() == 8
    assert goal.sequence_counter == 8
    assert context.sequence_counter == 8


def test_metadata_helpers() -> None:
    context = TrackingContext(run_id="r")
    context.add_metadata("attack", "pair")

    assert context.get_metadata("attack") == "pair"
    assert context.get_metadata("missing", 0) == 0


def test_repr_names_the_client_type_but_never_its_secrets() -> None:
    class AuthenticatedClient:
        token = CANARY

        def __repr__(self) -> str:
            return f"AuthenticatedClient(token={self.token!r})"

    context = TrackingContext(client=AuthenticatedClient(), run_id="r", parent_result_id="x")

    text = repr(context)
    assert "AuthenticatedClient" in text
    assert "run_id='r'" in text
    assert CANARY not in text
