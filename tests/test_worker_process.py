"""dramatiq's message encoding (orjson, a screened body decoded once), and the garbage collector and thread
switching of worker processes."""

from __future__ import annotations

import subprocess
import sys

import dramatiq
import pytest
from dramatiq.errors import DecodeError
from dramatiq.message import Message

from commine.broker.dramatiq_broker import FastJSONEncoder


def test_the_same_body_decoded_twice_in_a_row_is_parsed_once() -> None:
    encoder = FastJSONEncoder()
    body = encoder.encode({"args": [{"comments": [{"id": "1"}] * 3}], "kwargs": {}})
    first = encoder.decode(body)
    # The consumer decodes what the screen decoded: the very same result, not a second parse...
    assert encoder.decode(body) is first
    # ...once only: a third decode, or an equal body in another object, is parsed afresh.
    third = encoder.decode(body)
    assert third == first and third is not first
    assert encoder.decode(bytes(bytearray(body))) is not third


def test_a_message_decoded_for_the_screen_and_again_for_the_worker_is_whole_both_times() -> None:
    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(FastJSONEncoder())
    try:
        body = Message("q", "ingest", ({"batch_id": "b"},), {}, {"retries": 0}).encode()
        screened, consumed = Message.decode(body), Message.decode(body)
        assert screened.args == consumed.args == ({"batch_id": "b"},)
        assert consumed.options == {"retries": 0} and consumed.actor_name == "ingest"
    finally:
        dramatiq.set_encoder(previous)


def test_a_body_that_is_not_json_raises_a_decode_error_every_time() -> None:
    encoder = FastJSONEncoder()
    for _ in range(2):
        with pytest.raises(DecodeError):
            encoder.decode(b"{not json")


def test_a_long_running_process_collects_garbage_less_often_and_never_scans_what_start_up_left() -> None:
    script = (
        "import gc; from commine.bootstrap import GC_THRESHOLD, tune_gc; "
        "before = gc.get_threshold()[0]; tune_gc(); "
        "print(before, gc.get_threshold()[0] == GC_THRESHOLD, gc.get_freeze_count() > 1000)"
    )
    assert printed_by(script) == ["700", "True", "True"]


def test_a_worker_thread_keeps_the_gil_longer_before_handing_it_over() -> None:
    script = (
        "import sys; from commine.bootstrap import WORKER_SWITCH_INTERVAL, tune_worker_threads; "
        "before = sys.getswitchinterval(); tune_worker_threads(); "
        "print(before, sys.getswitchinterval() == WORKER_SWITCH_INTERVAL > before)"
    )
    assert printed_by(script) == ["0.005", "True"]


def printed_by(script: str) -> list[str]:
    """What ``script`` prints, word by word, run in a fresh interpreter (so this one's settings stay)."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
