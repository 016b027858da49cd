"""Scenario 5: the REST API fuzzed against its own OpenAPI schema.

Schemathesis reads `/api/v1/schema/` from the Django WSGI application in process, then
sends every operation examples, boundary values (coverage phase) and random valid and
invalid requests (fuzzing phase), each with a full-scope API key of a trader funded in
both modes, and runs every check on each response: no 5xx, status code, content type,
headers and body as the schema documents them, valid data accepted and invalid data
refused. A fixed seed and derandomized generation make a run repeatable.

`TRUST_FUZZ_EXAMPLES` sets the number of fuzzed examples per operation and generation
mode (default 3, the CI run); `make chaos` raises it. The totals are printed at the end
and written as JSON to `TRUST_FUZZ_REPORT` when that is set.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest
import schemathesis
from django.core.cache import caches
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from accounts.services.api_keys import api_key_issue_login
from trading.tests.factories import UserFactory, fund

EXAMPLES = int(os.environ.get("TRUST_FUZZ_EXAMPLES", "3"))
SEED = 20240605
SCHEMA_PATH = "/api/v1/schema/?format=json"

# Codes the contract gives a request that is well formed but refused by the exchange's
# rules (a market that does not exist, margin, the tick grid): these are the business
# refusals of docs/api.md, not a disagreement between the schema and the server.
BUSINESS_STATUSES = ["2xx", "400", "401", "403", "404", "409", "422", "429"]
# A request the schema accepts must never be refused for its shape.
SHAPE_CODES = {"BAD_JSON", "MISSING_FIELD", "UNKNOWN_FIELD"}


class Tally:
    """What the run did: requests sent, per operation, per status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_operation: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()

    def add(self, label: str, status: int) -> None:
        with self.lock:
            self.by_operation[label] += 1
            self.by_status[status] += 1

    def summary(self) -> dict[str, object]:
        return {
            "examplesPerOperation": EXAMPLES,
            "seed": SEED,
            "operations": len(self.by_operation),
            "requests": sum(self.by_operation.values()),
            "serverErrors": sum(n for s, n in self.by_status.items() if s >= 500),
            "byStatus": {str(s): n for s, n in sorted(self.by_status.items())},
            "byOperation": dict(sorted(self.by_operation.items())),
        }


TALLY = Tally()


@schemathesis.check
def positive_shape_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A request generated to fit the schema is never refused as malformed."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    if code in SHAPE_CODES:
        raise AssertionError(f"a request that fits the schema was refused with {code}")
    return True


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "continue-on-failure": True,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": {
                "enabled": True,
                "positive_data_acceptance": {"expected-statuses": BUSINESS_STATUSES},
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )


# Read from the application at collection; serving the schema touches no database.
schema = schemathesis.openapi.from_wsgi(SCHEMA_PATH, get_wsgi_application(), config=_config())


@pytest.fixture(scope="module", autouse=True)
def _report_totals(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    summary = TALLY.summary()
    line = (
        f"fuzz: {summary['operations']} operations, {summary['requests']} requests, "
        f"{summary['serverErrors']} server errors, statuses {summary['byStatus']}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")
    else:
        print(line)
    path = os.environ.get("TRUST_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)


@pytest.fixture
def _connection_kept(db) -> Iterator[None]:
    """Requests run inside the test's transaction, as with Django's test client: the
    handler must not close the connection when a request ends."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def trader(_connection_kept, settings) -> dict[str, str]:
    """Markets of every kind and a trader funded in both modes: their id and key."""
    # Throttle buckets of this run only, not the machine's shared cache.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "trust-fuzz",
        }
    }
    caches["default"].clear()
    call_command("seed_demo", history_days=0, stdout=io.StringIO())
    user = UserFactory()
    for mode in ("REAL", "PAPER"):
        fund(user, Decimal("1000000"), "USDC", mode)
        fund(user, Decimal("100000"), "CXPT", mode)
    return {"traderId": str(user.trader_id), "token": api_key_issue_login(trader=user)}


@schema.parametrize()
def test_api_conforms_to_its_schema(case: schemathesis.Case, trader: dict[str, str]) -> None:
    meta = case.meta
    if "trader_id" in (case.path_parameters or {}) and meta and meta.generation.mode.is_positive:
        # A valid request names the trader's own path; another trader's is a plain 404.
        case.path_parameters["trader_id"] = trader["traderId"]
    headers = {"Authorization": f"Token {trader['token']}"}
    response = case.call(headers=headers)
    TALLY.add(case.operation.label, response.status_code)
    case.validate_response(response, headers=headers, transport_kwargs={"headers": headers})
