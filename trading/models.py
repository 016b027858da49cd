"""Markets, books, orders, trades, fills and positions; and the stored responses of
idempotent requests (trading/idempotency.py), which the account API uses too.

The database is the source of truth for every book: the open orders of a (market, mode)
are the book, and `Book.seq` counts its changes. The matching engine's in-memory copy is
only a cache of it (see trading/services/books.py).
"""

from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from ledger.models import MONEY, Mode

QTY = {"max_digits": 38, "decimal_places": 12}


class MarketKind(models.TextChoices):
    PERP = "PERP"
    FUTURE = "FUTURE"
    OPTION = "OPTION"
    SPOT = "SPOT"


class MarketStatus(models.TextChoices):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    DELISTED = "DELISTED"
    SETTLED = "SETTLED"


class OptionType(models.TextChoices):
    CALL = "CALL"
    PUT = "PUT"


class Market(models.Model):
    symbol = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=6, choices=MarketKind.choices)
    base = models.CharField(max_length=16)
    quote = models.CharField(max_length=16, default="USDC")
    # Tick and lot sizes are fixed once a market trades: the engine keeps prices and
    # quantities as integer multiples of them.
    tick_size = models.DecimalField(max_digits=24, decimal_places=8)
    lot_size = models.DecimalField(max_digits=24, decimal_places=8)
    min_notional = models.DecimalField(max_digits=24, decimal_places=8, default=Decimal("10"))
    max_leverage = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("20"))
    maintenance_margin_ratio = models.DecimalField(
        max_digits=8, decimal_places=6, default=Decimal("0.005")
    )
    maker_fee = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0.0002"))
    taker_fee = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0.0005"))
    status = models.CharField(
        max_length=8, choices=MarketStatus.choices, default=MarketStatus.ACTIVE
    )
    expiry_at = models.DateTimeField(null=True, blank=True)
    strike = models.DecimalField(max_digits=24, decimal_places=8, null=True, blank=True)
    option_type = models.CharField(max_length=4, choices=OptionType.choices, null=True, blank=True)
    underlying = models.CharField(max_length=16, blank=True, default="")
    index_price = models.DecimalField(null=True, blank=True, **MONEY)
    mark_price = models.DecimalField(null=True, blank=True, **MONEY)
    funding_rate = models.DecimalField(max_digits=16, decimal_places=10, null=True, blank=True)
    next_funding_at = models.DateTimeField(null=True, blank=True)
    mark_iv = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    funding_interval = models.PositiveIntegerField(default=8 * 3600, help_text="seconds")
    funding_cap = models.DecimalField(max_digits=10, decimal_places=8, default=Decimal("0.0075"))
    # Price bands, fractions of the mark (the index where a market has no mark): see
    # docs/risk.md. A limit order priced further than `price_band` from it is refused;
    # a market order fills no further than `market_slippage` from it; the mark itself
    # stays within `mark_band` of the index.
    price_band = models.DecimalField(
        max_digits=8,
        decimal_places=6,
        default=Decimal("0.05"),
        help_text="limit orders within this fraction of the mark (options: wider, e.g. 0.5)",
    )
    market_slippage = models.DecimalField(
        max_digits=8,
        decimal_places=6,
        default=Decimal("0.05"),
        help_text="market orders fill within this fraction of the mark",
    )
    mark_band = models.DecimalField(
        max_digits=8,
        decimal_places=6,
        default=Decimal("0.02"),
        help_text="the mark stays within this fraction of the index",
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="market_tick_positive"),
            models.CheckConstraint(condition=Q(lot_size__gt=0), name="market_lot_positive"),
        ]

    def __str__(self) -> str:
        return self.symbol

    @property
    def is_derivative(self) -> bool:
        return self.kind != MarketKind.SPOT


class Book(models.Model):
    """One order book: a market in one mode. Its row is the lock that serialises
    matching for the book across every process."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="books")
    mode = models.CharField(max_length=5, choices=Mode.choices)
    seq = models.BigIntegerField(default=0)
    last_price = models.DecimalField(null=True, blank=True, **MONEY)
    # Mark price of this book (risk, PnL and liquidation use it, never the last trade),
    # the moving average of (mid - index) it is anchored on, and the funding state.
    mark_price = models.DecimalField(null=True, blank=True, **MONEY)
    basis_avg = models.DecimalField(null=True, blank=True, **MONEY)
    funding_rate = models.DecimalField(max_digits=16, decimal_places=10, null=True, blank=True)
    next_funding_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["market", "mode"], name="book_unique")]

    def __str__(self) -> str:
        return f"{self.market.symbol}/{self.mode}"


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    # Conditional: placed as a MARKET or LIMIT order once the price crosses the trigger.
    STOP_MARKET = "STOP_MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    # A stop whose trigger follows the price: `callback_rate` % behind the best price
    # seen since it was placed (`trail_extreme`).
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"


CONDITIONAL_TYPES = (
    OrderType.STOP_MARKET,
    OrderType.STOP_LIMIT,
    OrderType.TAKE_PROFIT_MARKET,
    OrderType.TAKE_PROFIT_LIMIT,
    OrderType.TRAILING_STOP_MARKET,
)
# The conditional orders that fire as the price moves against the side they trade:
# a stop buys into a rise and sells into a fall.
STOP_TYPES = (OrderType.STOP_MARKET, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP_MARKET)


class TriggerBy(models.TextChoices):
    MARK = "MARK"
    LAST = "LAST"


class Attached(models.TextChoices):
    """A conditional order attached to its owner's position (`POST /positions/{symbol}/tpsl`):
    sized to the position when it fires, one-cancels-the-other, gone with the position."""

    TAKE_PROFIT = "TP"
    STOP_LOSS = "SL"


class TimeInForce(models.TextChoices):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    POST_ONLY = "POST_ONLY"


class OrderStatus(models.TextChoices):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    # A conditional order waiting for its trigger: off the book, reserving nothing.
    UNTRIGGERED = "UNTRIGGERED"


# On the book.
OPEN_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
# What a trader sees as open and what cancels take: on the book, or waiting to be.
LIVE_STATUSES = (*OPEN_STATUSES, OrderStatus.UNTRIGGERED)


class Order(models.Model):
    # No index of its own: a composite index of the model leads with it.
    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=20, choices=OrderType.choices)
    time_in_force = models.CharField(max_length=9, choices=TimeInForce.choices)
    price = models.DecimalField(null=True, blank=True, **MONEY)
    qty = models.DecimalField(**QTY)
    filled_qty = models.DecimalField(default=0, **QTY)
    # Sum of price*qty over fills: the average fill price without rounding drift.
    filled_notional = models.DecimalField(default=0, **MONEY)
    status = models.CharField(max_length=16, choices=OrderStatus.choices)
    reduce_only = models.BooleanField(default=False)
    # An option sell covered by its owner's long: it reserves nothing, so it may only
    # ever sell that long (the engine rests it as it rests a reduce-only order).
    covered = models.BooleanField(default=False)
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    # What the remaining quantity reserves from `reserve_asset`'s balance (`locked`).
    reserved = models.DecimalField(default=0, **MONEY)
    reserve_asset = models.CharField(max_length=16, blank=True, default="")
    # Who placed it: the trader, or the risk engine (liquidation, auto-deleverage, expiry).
    source = models.CharField(max_length=12, default="USER")
    # Why it was cancelled, or, for a conditional order refused when its trigger fired,
    # the refusal's code (INSUFFICIENT_MARGIN, PRICE_OUT_OF_BAND, ...).
    cancel_reason = models.CharField(max_length=32, blank=True, default="")
    # A conditional order's trigger: the price, and which price crossing it fires it.
    trigger_price = models.DecimalField(null=True, blank=True, **MONEY)
    trigger_by = models.CharField(max_length=4, choices=TriggerBy.choices, blank=True, default="")
    attached = models.CharField(max_length=2, choices=Attached.choices, blank=True, default="")
    # A take-profit and a stop-loss the trader attached to this order: set on the
    # position once the order has filled, in whole or in part (`tpsl_armed` from then).
    take_profit = models.DecimalField(null=True, blank=True, **MONEY)
    stop_loss = models.DecimalField(null=True, blank=True, **MONEY)
    tpsl_armed = models.BooleanField(default=False)
    # A trailing stop's distance behind the best price, in percent, and that price.
    callback_rate = models.DecimalField(null=True, blank=True, max_digits=4, decimal_places=2)
    trail_extreme = models.DecimalField(null=True, blank=True, **MONEY)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["trader", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="order_client_id_unique",
            ),
            models.CheckConstraint(condition=Q(qty__gt=0), name="order_qty_positive"),
            # No order is ever filled past its quantity, whatever the code above does.
            models.CheckConstraint(
                condition=Q(filled_qty__gte=0) & Q(filled_qty__lte=models.F("qty")),
                name="order_fill_within_qty",
            ),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="order_reserved_nonneg"),
        ]
        indexes = [
            models.Index(
                fields=["market", "mode", "id"],
                condition=Q(status__in=["NEW", "PARTIALLY_FILLED"]),
                name="order_open_book",
            ),
            # Depth: each side's open orders by price, read from the best price for as
            # many levels as are asked (trading/depth.py).
            models.Index(
                fields=["market", "mode", "side", "price"],
                condition=Q(status__in=["NEW", "PARTIALLY_FILLED"]),
                name="order_open_levels",
            ),
            models.Index(fields=["trader", "mode", "status"], name="order_trader_status"),
            # The clock's sweep for triggers reads only the orders waiting for one.
            models.Index(
                fields=["market", "mode"],
                condition=Q(status="UNTRIGGERED"),
                name="order_untriggered",
            ),
            # The clock's look for filled orders whose TP/SL is still to be set: an order
            # enters it with its first fill and leaves it when armed, so one that never
            # fills (cancelled, expired) is never read again.
            models.Index(
                fields=["id"],
                condition=Q(tpsl_armed=False, filled_qty__gt=0)
                & (Q(take_profit__isnull=False) | Q(stop_loss__isnull=False)),
                name="order_tpsl_pending",
            ),
        ]

    @property
    def shrinks_only(self) -> bool:
        """Whether it may only shrink its owner's position (the engine's reduce-only
        mark): a reduce-only order or a covered option sell."""
        return self.reduce_only or self.covered

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class Trade(models.Model):
    """A public print: one match between a taker and a maker."""

    # No index of its own: a composite index of the model leads with it.
    market = models.ForeignKey(Market, on_delete=models.PROTECT, db_index=False)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    price = models.DecimalField(**MONEY)
    qty = models.DecimalField(**QTY)
    taker_side = models.CharField(max_length=4, choices=Side.choices)
    # No database constraint on the references among orders, trades and fills (here and
    # in Fill): all three are written only by the matching transaction, together, and
    # PostgreSQL's check of each reference (a row lock on the order or trade at COMMIT)
    # was a third of its time per order. `check_invariants` reports any dangling one;
    # Django's on_delete still guards deletes.
    taker_order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    maker_order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    liquidation = models.BooleanField(default=False)
    # The book's mark when the trade was matched: what its price band was measured from
    # (`check_invariants` finds prints outside it).
    mark_price = models.DecimalField(null=True, blank=True, **MONEY)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["market", "mode", "-id"], name="trade_tape")]


class Candle(models.Model):
    """The trades of one book over one period (a minute, an hour or a day, UTC): kept as
    trades are recorded (`trading.candles`), so that charts and the 24-hour figures read
    a few rows instead of every trade."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, db_index=False)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    resolution = models.PositiveIntegerField(help_text="seconds")
    start = models.DateTimeField()
    open = models.DecimalField(**MONEY)
    high = models.DecimalField(**MONEY)
    low = models.DecimalField(**MONEY)
    close = models.DecimalField(**MONEY)
    volume = models.DecimalField(**QTY)
    trades = models.PositiveIntegerField()
    # The trades that set `open` and `close`: writes may arrive in any order.
    first_trade_id = models.BigIntegerField()
    last_trade_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["market", "mode", "resolution", "start"], name="candle_period"
            )
        ]


class Liquidity(models.TextChoices):
    MAKER = "MAKER"
    TAKER = "TAKER"


class Fill(models.Model):
    """One side of a trade, as its trader sees it."""

    # Without database constraints: see Trade.
    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, db_constraint=False)
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="fills", db_constraint=False
    )
    # No index of its own: a composite index of the model leads with it.
    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    side = models.CharField(max_length=4, choices=Side.choices)
    price = models.DecimalField(**MONEY)
    qty = models.DecimalField(**QTY)
    fee = models.DecimalField(**MONEY)
    liquidity = models.CharField(max_length=5, choices=Liquidity.choices)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["trader", "mode", "-id"], name="fill_trader")]


class Position(models.Model):
    """A trader's position in a derivatives market, one mode.

    `open_notional` is the signed cost of the open size (sum of price*qty of the fills
    that opened it, less what closing fills released). Keeping the cost instead of a
    rounded entry price makes realized PnL sum exactly to zero across all traders once
    positions are flat: money is neither created nor lost by rounding.
    The row also carries the trader's chosen leverage for the market.
    """

    # No index of its own: a composite index of the model leads with it.
    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    size = models.DecimalField(default=0, **QTY)
    open_notional = models.DecimalField(default=0, **MONEY)
    realized_pnl = models.DecimalField(default=0, **MONEY)
    leverage = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["trader", "market", "mode"], name="position_unique")
        ]


class IndexPrice(models.Model):
    """The oracle price of an underlying (BTC, ETH, CXPT), from the configured feeds."""

    underlying = models.CharField(max_length=16, unique=True)
    price = models.DecimalField(**MONEY)
    source = models.CharField(max_length=40, default="manual")
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.underlying} {self.price}"


class IndexSample(models.Model):
    """Index history: expiry settles at the average of the last 30 minutes of it."""

    underlying = models.CharField(max_length=16)
    price = models.DecimalField(**MONEY)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["underlying", "at"])]


class FundingSample(models.Model):
    """One premium-index sample of a perpetual's book (taken every minute)."""

    book = models.ForeignKey(Book, on_delete=models.CASCADE)
    premium = models.DecimalField(max_digits=20, decimal_places=12)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["book", "at"])]


class FundingEvent(models.Model):
    """One settled funding of one book. The unique constraint, not hope, makes a
    funding time settle once even when two clocks run."""

    book = models.ForeignKey(Book, on_delete=models.PROTECT)
    funding_at = models.DateTimeField()
    rate = models.DecimalField(max_digits=16, decimal_places=10)
    mark_price = models.DecimalField(**MONEY)
    positions = models.PositiveIntegerField(default=0)
    paid = models.DecimalField(default=0, **MONEY)
    insurance_remainder = models.DecimalField(default=0, **MONEY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["book", "funding_at"], name="funding_once")]


class Settlement(models.Model):
    """The expiry of a dated future or option: settled once."""

    market = models.OneToOneField(Market, on_delete=models.PROTECT)
    price = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(auto_now_add=True)


class Liquidation(models.Model):
    """A liquidation of one account (trader, mode), for the record and the trader's
    channel."""

    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    mode = models.CharField(max_length=5, choices=Mode.choices)
    equity = models.DecimalField(**MONEY)
    maintenance = models.DecimalField(**MONEY)
    insurance_paid = models.DecimalField(default=0, **MONEY)
    fee = models.DecimalField(default=0, **MONEY)
    adl_qty = models.DecimalField(default=0, **QTY)
    detail = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)


class LiquidationSweep(models.Model):
    """One liquidation sweep, and the accounts it left below maintenance (its index was
    stale, or closing them failed): `check_invariants` reports an account left so by
    more than two sweeps in a row, or left at negative equity."""

    at = models.DateTimeField(db_index=True)
    liquidated = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # [[trader pk, mode, equity, maintenance], ...] as decimal strings
    left_below = models.JSONField(default=list)


class IdempotencyRecord(models.Model):
    """The stored response of a request sent with an `Idempotency-Key` header. Written
    in the same transaction as the request's effects, so a key has a record exactly
    when the request it names took effect (see trading/idempotency.py)."""

    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Its table from when it lived in `accounts`: moving the model changed no schema.
        db_table = "accounts_idempotencyrecord"
        constraints = [
            models.UniqueConstraint(fields=["trader", "key"], name="idempotency_key_unique")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]
