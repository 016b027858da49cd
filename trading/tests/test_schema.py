"""The OpenAPI schema renders and the docs page is served without external assets."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_schema_lists_the_contract_endpoints():
    r = APIClient().get("/api/v1/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in [
        "/api/v1/trade",
        "/api/v1/trade/batch",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/fills",
        "/api/v1/positions",
        "/api/v1/positions/{symbol}/close",
        "/api/v1/positions/{symbol}/tpsl",
        "/api/v1/markets",
        "/api/v1/markets/{symbol}/depth",
        "/api/v1/metrics",
        "/api/v1/auth/signup",
        "/api/v1/paper/faucet",
    ]:
        assert p in paths, p


def test_docs_page_uses_bundled_swagger_assets():
    r = APIClient().get("/api/v1/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "swagger-ui" in html and "cdn." not in html


def test_unknown_api_path_is_json_404():
    r = APIClient().get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


def test_schema_generation_has_no_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
