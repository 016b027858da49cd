"""Index price feeds. `settings.INDEX_FEEDS` lists the classes the clock polls; each
returns fresh prices for the underlyings it knows. `manage.py set_index_price` feeds
the index by hand whatever the setting."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


class IndexFeed(Protocol):
    name: str

    def fetch(self, current: dict[str, Decimal]) -> dict[str, Decimal]: ...


class RandomWalkFeed:
    """Demo feed: each underlying moves a few basis points per poll. Integer steps in
    Decimal, so no float ever touches the price."""

    name = "random-walk"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def fetch(self, current: dict[str, Decimal]) -> dict[str, Decimal]:
        out = {}
        for underlying, price in current.items():
            bps = Decimal(self.rng.randint(-3, 3)) / Decimal(10_000)
            out[underlying] = (price * (1 + bps)).quantize(Decimal("1e-6"))
        return out


def configured_feeds() -> list[IndexFeed]:
    return [import_string(path)() for path in getattr(settings, "INDEX_FEEDS", [])]
