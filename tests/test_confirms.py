"""The confirm bookkeeping of the stream publisher, against the plain model it replaces: a set of
pending tags, a multiple-ack settling every one up to its tag."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from commine.broker.confirms import Unconfirmed

#: ("issue", n) publishes n messages; ("settle", tag, multiple) is an ack or nack from the broker.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.integers(1, 20)),
        st.tuples(st.just("settle"), st.integers(-2, 80), st.booleans()),
    ),
    max_size=60,
)


@given(steps)
def test_it_settles_what_a_set_of_pending_tags_would(script: list[tuple]) -> None:
    unconfirmed, pending, issued = Unconfirmed(), set(), 0
    for step in script:
        if step[0] == "issue":
            for _ in range(step[1]):
                issued += 1
                assert unconfirmed.issue() == issued
                pending.add(issued)
        else:
            _, tag, multiple = step
            expected = {t for t in pending if t <= tag} if multiple else pending & {tag}
            assert unconfirmed.settle(tag, multiple=multiple) == len(expected)
            pending -= expected
        assert len(unconfirmed) == len(pending)


def test_a_multiple_ack_after_single_ones_counts_each_tag_once() -> None:
    unconfirmed = Unconfirmed()
    for _ in range(5):
        unconfirmed.issue()
    assert unconfirmed.settle(2, multiple=False) == 1
    assert unconfirmed.settle(4, multiple=False) == 1
    assert unconfirmed.settle(2, multiple=False) == 0  # a repeat settles nothing
    assert unconfirmed.settle(4, multiple=True) == 2  # 1 and 3
    assert len(unconfirmed) == 1
    assert unconfirmed.settle(9, multiple=True) == 1  # past the last issued: what there is
    assert not unconfirmed


def test_tags_acked_one_by_one_in_order_are_not_kept() -> None:
    # A channel whose broker only ever acks singly must not remember every tag it published.
    unconfirmed = Unconfirmed()
    for _ in range(1000):
        unconfirmed.settle(unconfirmed.issue(), multiple=False)
    assert not unconfirmed
    assert not unconfirmed._settled
