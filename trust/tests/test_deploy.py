"""Deployment: `manage.py check --deploy` is clean with production settings, the dev
defaults still work, and CSRF guards every session-authenticated unsafe request.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from trust.tests.test_authz import (
    MATRIX,
    World,
    build_world,
    in_savepoint,
    url_routes,
    view_methods,
)

ROOT = Path(__file__).resolve().parents[2]
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
# Ignore the session altogether (no SessionAuthentication): they check a password and
# return an API key, setting no cookie, so a forged cross-site request gains nothing.
NO_SESSION = {"api/v1/auth/signup", "api/v1/auth/token"}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="exchange.example.com",
        CSRF_TRUSTED_ORIGINS="https://exchange.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = manage("check", DEBUG="0", ALLOWED_HOSTS="exchange.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_dev_defaults_still_check_clean() -> None:
    result = manage("check")
    assert result.returncode == 0, result.stdout + result.stderr


# -- CSRF ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _generous_throttles(settings):
    settings.THROTTLE_RATES = {k: "100000/hour" for k in settings.THROTTLE_RATES}


@pytest.fixture
def world(db) -> World:
    return build_world()


def csrf_client(w: World) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.force_login(w.a)
    client.get("/account/")  # sets the csrftoken cookie
    return client, client.cookies["csrftoken"].value


def unsafe_ops() -> list[tuple[str, object]]:
    """Every unsafe method of every API endpoint, straight from the URLconf."""
    out = []
    for route, callback in url_routes():
        if not route.startswith("api/v1/"):
            continue
        for method in sorted(view_methods(callback) & set(UNSAFE)):
            ops = [op for op in MATRIX.get(route, []) if op.method == method]
            assert ops, f"{method} {route} has no row in the authorization matrix"
            out.append((route, ops[0]))
    return out


def test_csrf_on_every_session_authenticated_unsafe_request(world: World) -> None:
    client, token = csrf_client(world)
    checked = 0
    for route, op in unsafe_ops():
        for mode in ("REAL", "PAPER"):
            path = op.path(world, "A", mode)
            body = op.body(world, "A", mode) if op.body else None
            data = json.dumps(body) if body is not None else ""

            def cell(path=path, data=data, route=route, op=op) -> None:
                bare = client.generic(op.method, path, data, content_type="application/json")
                if route in NO_SESSION:
                    assert bare.status_code != 403, (route, bare.content)
                    return
                assert bare.status_code == 403, (op.method, path, bare.status_code)
                assert bare.json()["error"]["code"] == "FORBIDDEN"

            def with_token(path=path, data=data, op=op) -> None:
                resp = client.generic(
                    op.method,
                    path,
                    data,
                    content_type="application/json",
                    HTTP_X_CSRFTOKEN=token,
                )
                assert resp.status_code != 403, (op.method, path, resp.content)
                assert resp.status_code < 500

            def by_api_key(path=path, data=data, route=route, op=op) -> None:
                resp = Client(enforce_csrf_checks=True).generic(
                    op.method,
                    path,
                    data,
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Token {world.tokens['A']}",
                )
                assert resp.status_code != 403, (op.method, path, resp.content)
                if route not in NO_SESSION:  # auth/token answers a wrong password with 401
                    assert resp.status_code != 401, (op.method, path, resp.content)

            in_savepoint(cell)
            in_savepoint(with_token)
            in_savepoint(by_api_key)
            checked += 3
    assert checked == 3 * 2 * len(unsafe_ops()) >= 90
    print(f"csrf: {checked} requests")


def test_csrf_on_the_session_get_that_writes_a_wallet_challenge(world: World) -> None:
    client, token = csrf_client(world)
    path = f"/api/v1/user/{world.a.trader_id}/link-wallet"
    assert client.get(path).status_code == 403
    assert client.get(path, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_csrf_on_forms_and_admin_actions(world: World) -> None:
    staff = Client(enforce_csrf_checks=True)
    staff.force_login(world.staff)
    staff.get("/account/")
    token = staff.cookies["csrftoken"].value
    action = {"action": "pause", "_selected_action": [str(world.market.pk)]}
    assert staff.post("/admin/trading/market/", action).status_code == 403
    ok = staff.post("/admin/trading/market/", {**action, "csrfmiddlewaretoken": token})
    assert ok.status_code == 302
    anon = Client(enforce_csrf_checks=True)
    for path, form in [
        ("/accounts/login/", {"username": "alice-authz", "password": "pw-for-tests-1"}),
        ("/accounts/signup/", {"username": "x1", "password1": "p" * 12, "password2": "p" * 12}),
        ("/admin/login/", {"username": "staff-authz", "password": "pw-for-tests-1"}),
    ]:
        assert anon.post(path, form).status_code == 403, path
    client, _ = csrf_client(world)
    assert client.post("/accounts/logout/").status_code == 403
