"""Prometheus metrics of the risk engine, in the process's default registry: served at
/metrics by a web process, and by the clock on its own port when it is given one
(`runclock --metrics-port`, or CLOCK_METRICS_PORT)."""

from prometheus_client import Counter

# Labelled by the error's code (an ExchangeError) or its class: a bounded set.
LIQUIDATION_FAILURES = Counter(
    "dex_liquidation_failures_total",
    "Accounts whose liquidation raised and was rolled back (retried next sweep)",
    ["error"],
)
EXPIRY_FAILURES = Counter(
    "dex_expiry_failures_total",
    "Markets whose settlement at expiry raised and was rolled back (retried next run)",
    ["error"],
)


def error_label(e: BaseException) -> str:
    return getattr(e, "code", None) or type(e).__name__
