"""Delivery outcomes: what a sender reports about one attempt."""

from __future__ import annotations

import threading

import pytest

from hackagent_otel._delivery.outcome import Delivered


def test_an_answer_handed_over_as_json_text_reads_as_its_parsed_body() -> None:
    delivered = Delivered(201, json_text=b'{"id": 7, "sequence": [1, 2]}')
    assert delivered.body == {"id": 7, "sequence": [1, 2]}
    assert delivered == Delivered(201, {"id": 7, "sequence": [1, 2]})
    assert delivered != Delivered(200, {"id": 7, "sequence": [1, 2]})


@pytest.mark.parametrize(
    "text", [b"not json", b"\xff\xfe\xfa", b"[" * 100_000 + b"]" * 100_000], ids=str
)
def test_an_answer_that_cannot_be_read_as_json_reads_as_no_body(text: bytes) -> None:
    delivered = Delivered(200, json_text=text)
    assert delivered.body is None
    assert delivered.body is None  # and stays so
    assert delivered == Delivered(200)


def test_threads_reading_the_body_at_once_all_see_it() -> None:
    delivered = Delivered(201, json_text=b'{"ok": true}')
    start = threading.Barrier(8)
    seen: list[object] = []

    def read() -> None:
        start.wait()
        seen.append(delivered.body)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [{"ok": True}] * 8


def test_a_body_and_json_text_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        Delivered(200, {"a": 1}, json_text=b"{}")


def test_a_delivered_outcome_is_not_hashable_as_its_body_may_be_a_dict() -> None:
    with pytest.raises(TypeError):
        hash(Delivered(200, {"a": 1}))
