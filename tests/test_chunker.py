import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute import Chunker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_first_piece_is_released_at_once(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    assert chunker.push(b"id,name\r\n") == b"id,name\r\n"
    assert chunker.pending == 0
    assert chunker.deadline is None


def test_empty_pushes_release_nothing_before_the_first_piece(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    assert chunker.push(b"") is None
    assert chunker.push(b"x") == b"x"


def test_later_pieces_coalesce_until_target(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    chunker.push(b"first")
    for _ in range(9):
        assert chunker.push(b"a" * 10) is None
    assert chunker.pending == 90
    assert chunker.push(b"b" * 15) == b"a" * 90 + b"b" * 15
    assert chunker.pending == 0


def test_deadline_is_max_latency_after_the_oldest_pending_piece(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    chunker.push(b"first")
    assert chunker.deadline is None
    assert not chunker.due()
    chunker.push(b"a")
    assert chunker.deadline == pytest.approx(1000.05)
    clock.now += 0.03
    assert chunker.push(b"b") is None
    assert chunker.deadline == pytest.approx(1000.05)  # a newer piece does not push the deadline back
    assert not chunker.due()
    clock.now += 0.02
    assert chunker.due()
    assert chunker.push(b"") == b"ab"
    assert chunker.deadline is None
    assert not chunker.due()


def test_a_push_past_the_deadline_releases_everything(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    chunker.push(b"first")
    chunker.push(b"a")
    clock.now += 1
    assert chunker.push(b"b") == b"ab"


def test_flush_returns_everything_pending(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.05, clock=clock)
    chunker.push(b"first")
    chunker.push(b"a")
    chunker.push(b"b")
    assert chunker.flush() == b"ab"
    assert chunker.pending == 0
    assert chunker.deadline is None


def test_empty_flush_returns_empty_bytes(clock: FakeClock) -> None:
    chunker = Chunker(clock=clock)
    assert chunker.flush() == b""
    chunker.push(b"first")
    assert chunker.flush() == b""


def test_zero_latency_releases_every_piece(clock: FakeClock) -> None:
    chunker = Chunker(100, 0.0, clock=clock)
    assert chunker.push(b"first") == b"first"
    assert chunker.push(b"a") == b"a"


@pytest.mark.parametrize(("target", "max_latency"), [(0, 0.05), (-1, 0.05), (10, -0.1)])
def test_invalid_arguments(target: int, max_latency: float) -> None:
    with pytest.raises(ValueError, match=r"target|max_latency"):
        Chunker(target, max_latency)


@given(pieces=st.lists(st.binary(max_size=40), max_size=50), target=st.integers(min_value=1, max_value=100))
def test_chunks_keep_every_byte_in_order_and_reach_target(pieces: list[bytes], target: int) -> None:
    chunker = Chunker(target, 0.05, clock=FakeClock())
    chunks = [chunk for piece in pieces if (chunk := chunker.push(piece)) is not None]
    last = chunker.flush()
    assert b"".join(chunks) + last == b"".join(pieces)
    # With the clock standing still, only the first chunk (and the final flush) may be short.
    assert all(len(chunk) >= target for chunk in chunks[1:])
    assert all(chunks)
