"""The soak's mix keeps the book it builds bounded: a trader with its limit of resting
orders cancels instead of placing, so that a long soak measures the server."""

from __future__ import annotations

from collections import Counter

from trust.soak import Mix, Results


def _drive(mix: Mix, steps: int) -> Counter:
    """Every placement rests (the worst case for the book); every cancel succeeds."""
    kinds: Counter = Counter()
    res = Results()
    next_id = 0
    most = 0
    for _ in range(steps):
        kind, _, _, t, _ = mix.next()
        kinds[kind] += 1
        if kind == "place":
            next_id += 1
            mix.answered(kind, t, 201, {"id": next_id, "status": "NEW"}, res)
        most = max(most, max(len(q) for q in mix.open))
    kinds["most resting"] = most
    return kinds


def test_a_trader_at_its_limit_cancels_instead_of_placing() -> None:
    kinds = _drive(Mix("http://x", ["a", "b"], 1, open_per_trader=5), 2000)
    assert kinds["most resting"] == 5
    # Once at the limit, placements and cancels take turns: the book holds steady.
    assert abs(kinds["place"] - kinds["cancel"]) <= 10


def test_without_a_limit_the_book_grows() -> None:
    kinds = _drive(Mix("http://x", ["a", "b"], 1, open_per_trader=0), 2000)
    assert kinds["most resting"] > 100
    assert kinds["place"] > 2 * kinds["cancel"]
