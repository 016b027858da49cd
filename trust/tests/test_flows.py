"""Scenario 1, random flows: seeded flows of operations through the services, every
market kind (perpetual, dated future, option, spot) in both modes, and the invariant
checker after each flow; then a property-based state machine over the same operations
with the checker after every step. Among the operations, an adversary's attacks on the
risk rules: every one must be refused, and the adversary must have taken nothing from
anyone else.

Scale by environment: `TRUST_FLOWS` flows (default 10) of `TRUST_STEPS` operations
(default 200) starting at seed `TRUST_SEED` (default 0); `make chaos` runs 1,000 flows.
The state machine runs `TRUST_MACHINE_EXAMPLES` examples (default 12) of up to
`TRUST_MACHINE_STEPS` steps (default 20), derandomized unless `TRUST_MACHINE_RANDOM` is
set. A long run reports its progress every 25 flows on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from trading.invariants import check_invariants
from trust.flows import (
    ASSETS,
    ATTACKS,
    BEYOND,
    FUTURE,
    LEVERAGES,
    LIMIT_TIFS,
    MARKET_TIFS,
    MODES,
    OPTION,
    PERP,
    SIDES,
    SPOT,
    Flow,
    isolated,
)

pytestmark = pytest.mark.django_db

FLOWS = int(os.environ.get("TRUST_FLOWS", "10"))
STEPS = int(os.environ.get("TRUST_STEPS", "200"))
FIRST_SEED = int(os.environ.get("TRUST_SEED", "0"))
MACHINE_EXAMPLES = int(os.environ.get("TRUST_MACHINE_EXAMPLES", "12"))
MACHINE_STEPS = int(os.environ.get("TRUST_MACHINE_STEPS", "20"))
PROGRESS_EVERY = 25


@pytest.fixture(autouse=True)
def _local_channel_layer(settings):
    """Broadcasts go to an in-process channel layer: they run (after each emulated
    commit) without a round trip to Redis per event."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def test_random_flows_keep_every_invariant() -> None:
    totals: Counter[str] = Counter()
    adversary_fills, moved = 0, Decimal(0)
    started = time.monotonic()
    for seed in range(FIRST_SEED, FIRST_SEED + FLOWS):
        rerun = f"seed {seed} (rerun with TRUST_SEED={seed} TRUST_FLOWS=1)"
        with isolated():
            flow = Flow(seed, steps_hint=STEPS)
            try:
                flow.run(STEPS)
            except Exception as e:
                raise AssertionError(f"{rerun}, step {flow.step_no}: {e!r}") from e
            problems = flow.check()
            assert problems == [], f"{rerun}: {problems}"
            accepted = {k: n for k, n in flow.counts.items() if k.endswith(":accepted")}
            assert accepted == {}, f"{rerun}: attacks got through: {accepted}"
            fills, value = flow.adversary_moved()
            assert (fills, value) == (0, 0), f"{rerun}: the adversary took {value} in {fills}"
            adversary_fills += fills
            moved += value
            totals.update(flow.counts)
        # Nothing of a flow outlives it.
        assert check_invariants() == []
        done = seed - FIRST_SEED + 1
        if FLOWS > PROGRESS_EVERY and done % PROGRESS_EVERY == 0:
            spent = time.monotonic() - started
            print(
                f"{done}/{FLOWS} flows, 0 violations, {spent:.0f}s, {done / spent:.3f} flows/s",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - started
    ops = FLOWS * STEPS
    print(
        f"\nrandom flows: {FLOWS} x {STEPS} = {ops} operations, 0 violations, "
        f"{elapsed:.1f}s ({FLOWS / elapsed:.2f} flows/s, {ops / elapsed:.0f} ops/s)",
        file=sys.stderr,
    )
    print(
        f"adversary: {totals['attacks']} attacks, {totals['attacks:refused']} refused, "
        f"{adversary_fills} fills with others, {moved} USDC moved to it from others",
        file=sys.stderr,
    )
    print(dict(sorted(totals.items())), file=sys.stderr)
    if FLOWS >= 8:
        # The generator still reaches every path that matters.
        for key in (
            "place:ok",
            "place:repeat",
            "place:WOULD_CROSS",
            "place:FOK_UNFILLABLE",
            "place:INSUFFICIENT_MARGIN",
            "place:REDUCE_ONLY_REJECTED",
            "trailing:placed",
            "tpsl_armed",
            "cancel:ok",
            "cancel:NOT_FOUND",
            "cancel:ORDER_NOT_OPEN",
            "cancel_all:ok",
            "index:ok",
            "funding:settled",
            "lever_up",
            "liquidations",
            "withdraw:ok",
            "withdraw_approve:ok",
            "withdraw_reject:ok",
            "deposit_confirm:ok",
            "deposit_reject:ok",
            "faucet:ok",
            "paper_reset:ok",
            "leverage:ok",
            "pause:ok",
            "settlements",
            "attack:out_of_band:PRICE_OUT_OF_BAND",
            "attack:dump:PRICE_OUT_OF_BAND",
            "attack:spot:INSUFFICIENT_BALANCE",
            "attack:withdraw:INSUFFICIENT_BALANCE",
        ):
            assert totals[key] > 0, (key, dict(totals))


# -- the state machine ----------------------------------------------------------------

traders = st.integers(0, 3)
modes = st.sampled_from(MODES)
markets = st.sampled_from((PERP, FUTURE, OPTION, SPOT))
picks = st.integers(0, 1 << 20)


class ExchangeMachine(RuleBasedStateMachine):
    """The exchange driven by hypothesis through the operations of `Flow`; the checker
    must find nothing after every step. Each example runs in a savepoint of its own."""

    def __init__(self) -> None:
        super().__init__()
        self._isolation = isolated()
        self._isolation.__enter__()
        self.flow: Flow | None = None

    def teardown(self) -> None:
        self._isolation.__exit__(None, None, None)

    @initialize(seed=st.integers(0, 2**16))
    def setup(self, seed: int) -> None:
        self.flow = Flow(seed)

    @rule(
        trader=traders,
        market=markets,
        mode=modes,
        side=st.sampled_from(SIDES),
        limit=st.booleans(),
        tif=st.integers(0, 4),
        offset=st.integers(-8, 8),
        lots=st.integers(1, 400),
        reduce_only=st.booleans(),
        client_id=st.sampled_from((None, None, None, "new", "repeat")),
    )
    def place(self, trader, market, mode, side, limit, tif, offset, lots, reduce_only, client_id):
        tifs = LIMIT_TIFS if limit else MARKET_TIFS
        self.flow.place(
            trader,
            market,
            mode,
            side,
            "LIMIT" if limit else "MARKET",
            tifs[tif % len(tifs)],
            offset,
            lots,
            reduce_only=reduce_only and market != SPOT,
            client_id=client_id,
        )

    @rule(
        counterparty=st.integers(1, 3),
        market=st.sampled_from((PERP, FUTURE)),
        mode=modes,
        side=st.sampled_from(SIDES),
    )
    def lever_up(self, counterparty: int, market: int, mode: str, side: str) -> None:
        self.flow.lever_up(counterparty, market, mode, side)

    @rule(pick=picks, as_owner=st.booleans())
    def cancel(self, pick: int, as_owner: bool) -> None:
        self.flow.cancel(pick, as_owner=as_owner)

    @rule(trader=traders, mode=st.one_of(st.none(), modes), market=st.one_of(st.none(), markets))
    def cancel_all(self, trader: int, mode: str | None, market: int | None) -> None:
        self.flow.cancel_all(trader, mode, market)

    @rule(bp=st.integers(-800, 800))
    def move_index(self, bp: int) -> None:
        self.flow.move_index(bp)

    @rule(mode=modes, premium_bp=st.integers(-75, 75))
    def funding(self, mode: str, premium_bp: int) -> None:
        self.flow.funding(mode, premium_bp)

    @rule()
    def liquidate(self) -> None:
        self.flow.liquidate()

    @rule(trader=traders, asset=st.sampled_from(ASSETS), percent=st.integers(1, 150))
    def withdraw(self, trader: int, asset: str, percent: int) -> None:
        self.flow.withdraw(trader, asset, percent)

    @rule(pick=picks, approve=st.booleans())
    def decide_withdrawal(self, pick: int, approve: bool) -> None:
        self.flow.decide_withdrawal(pick, approve=approve)

    @rule(
        trader=traders,
        asset=st.sampled_from(ASSETS),
        amount=st.integers(1, 50_000),
        outcome=st.sampled_from(("confirm", "reject", "pending")),
    )
    def deposit(self, trader: int, asset: str, amount: int, outcome: str) -> None:
        self.flow.deposit(trader, asset, Decimal(amount), outcome)

    @rule(trader=traders, reset_cooldown=st.booleans())
    def faucet(self, trader: int, reset_cooldown: bool) -> None:
        self.flow.faucet(trader, reset_cooldown=reset_cooldown)

    @rule(trader=traders)
    def paper_reset(self, trader: int) -> None:
        self.flow.paper_reset(trader)

    @rule(
        trader=traders,
        market=st.sampled_from((PERP, FUTURE, OPTION)),
        mode=modes,
        leverage=st.sampled_from(LEVERAGES),
    )
    def set_leverage(self, trader: int, market: int, mode: str, leverage: Decimal) -> None:
        self.flow.set_leverage(trader, market, mode, leverage)

    @rule(market=markets)
    def toggle_pause(self, market: int) -> None:
        self.flow.toggle_pause(market)

    @rule(market=st.sampled_from((FUTURE, OPTION)))
    def expire(self, market: int) -> None:
        self.flow.expire(market)

    @rule(
        kind=st.sampled_from(ATTACKS),
        mode=modes,
        market=markets,
        side=st.sampled_from(SIDES),
        beyond=st.sampled_from(BEYOND),
    )
    def attack(self, kind: str, mode: str, market: int, side: str, beyond) -> None:
        self.flow.attack(kind, mode, market, side, beyond)

    @precondition(lambda self: self.flow is not None)
    @invariant()
    def invariants_hold(self) -> None:
        assert self.flow.check() == []
        assert not any(k.endswith(":accepted") for k in self.flow.counts)
        assert self.flow.adversary_moved() == (0, 0)


MACHINE_SETTINGS = settings(
    max_examples=MACHINE_EXAMPLES,
    stateful_step_count=MACHINE_STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=os.environ.get("TRUST_MACHINE_RANDOM") is None,
)


def test_state_machine_keeps_every_invariant() -> None:
    run_state_machine_as_test(ExchangeMachine, settings=MACHINE_SETTINGS)
