"""Channel names of the WebSocket protocol, and who may subscribe to them.

A channel name is also the channel-layer group name (`^[a-zA-Z0-9._-]{1,99}$`):
`market.<SYMBOL>` (REAL book), `market.<SYMBOL>.paper`, `trader.<traderId>`,
`admin.<SYMBOL>`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_SYMBOL = r"[A-Z0-9][A-Z0-9-]{0,38}"
_MARKET = re.compile(rf"^market\.({_SYMBOL})(\.paper)?$")
_ADMIN = re.compile(rf"^admin\.({_SYMBOL})$")
_TRADER = re.compile(r"^trader\.([0-9a-fA-F-]{36})$")


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    kind: str  # "market" | "trader" | "admin"
    symbol: str | None = None
    mode: str | None = None
    trader_id: uuid.UUID | None = None

    @property
    def book_key(self) -> str:
        return f"{self.symbol}:{self.mode}"


def parse(name: object) -> Channel | None:
    if not isinstance(name, str) or len(name) > 99:
        return None
    if m := _MARKET.match(name):
        return Channel(name, "market", m.group(1), "PAPER" if m.group(2) else "REAL")
    if m := _ADMIN.match(name):
        return Channel(name, "admin", m.group(1))
    if m := _TRADER.match(name):
        try:
            trader_id = uuid.UUID(m.group(1))
        except ValueError:
            return None
        return Channel(f"trader.{trader_id}", "trader", trader_id=trader_id)
    return None


def market_channel(symbol: str, mode: str) -> str:
    return f"market.{symbol}" if mode == "REAL" else f"market.{symbol}.paper"


def trader_channel(trader_id: uuid.UUID | str) -> str:
    return f"trader.{trader_id}"


def admin_channel(symbol: str) -> str:
    return f"admin.{symbol}"
