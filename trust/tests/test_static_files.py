"""Static files with production settings: after `collectstatic` (DEBUG off) the web
process itself serves the dashboard's CSS, its ES modules and the npm libraries, under
hashed names, compressed and cached for a year; the modules import each other by those
same hashed names.

collectstatic here skips the third-party apps' files (admin, DRF, the API docs' bundles,
about 30 MB that take seconds to hash and compress); `make run-prod` collects them all.
"""

from __future__ import annotations

import gzip
import posixpath
import re

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from trading.tests.factories import MarketFactory

pytestmark = pytest.mark.django_db

PRODUCTION_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "dexsite.staticfiles.HashedStaticFilesStorage"},
}
HASHED = re.compile(r"\.[0-9a-f]{12}\.(?:js|mjs|css)$")
YEAR = "max-age=315360000"
STATIC_URL = re.compile(r"""/static/[^"'\s<>?#]+""")
# A module's static imports (`from '../lib/dom.js'`, `import './x.js'`) and literal
# dynamic ones (`import('./x.js')`).
IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    with override_settings(STATIC_ROOT=root, STORAGES=PRODUCTION_STORAGES):
        call_command(
            "collectstatic",
            "--noinput",
            "-v0",
            *("-i", "admin", "-i", "rest_framework", "-i", "drf_spectacular_sidecar"),
        )
    return root


@pytest.fixture
def production(static_root):
    """A client of a web process started with DEBUG off on that STATIC_ROOT (the
    middleware, WhiteNoise included, is built at the client's first request)."""
    with override_settings(DEBUG=False, STATIC_ROOT=static_root, STORAGES=PRODUCTION_STORAGES):
        yield Client()


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_a_page_and_every_asset_it_loads_are_served_with_debug_off(production) -> None:
    MarketFactory()
    page = production.get("/trade/BTC-PERP/?mode=PAPER")
    assert page.status_code == 200
    html = page.content.decode()
    # The stylesheet, the page's module, its modulepreloads, the chart library
    # (data-lib) and ethers (the page's JSON config): all named by their hashes.
    named = set(STATIC_URL.findall(html))
    assert any(u.endswith(".css") for u in named)
    assert any("/vendor/ethers/" in u for u in named)
    assert any("/vendor/lightweight-charts/" in u for u in named)
    unhashed = sorted(u for u in named if not HASHED.search(u))
    assert not unhashed, unhashed

    seen: set[str] = set()
    todo = sorted(named)
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        r = production.get(url)
        assert r.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert r["Content-Type"].startswith(kind), (url, r["Content-Type"])
        assert YEAR in r["Cache-Control"] and "immutable" in r["Cache-Control"], url
        if url.endswith(".js") and "/vendor/" not in url:
            source = body_of(r).decode()
            for spec in IMPORT.findall(source):
                if spec.startswith("."):
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(url), spec))
                    # Imported by the same name the page's tags give: one instance.
                    assert HASHED.search(target), (url, spec)
                    todo.append(target)
    modules = [u for u in seen if u.endswith(".js") and "/js/" in u]
    assert len(modules) >= 25, modules  # the page's module, its components and libraries


def test_compressed_when_the_client_accepts_it(production) -> None:
    MarketFactory()
    html = production.get("/").content.decode()
    script = next(u for u in STATIC_URL.findall(html) if u.endswith(".js"))
    r = production.get(script, HTTP_ACCEPT_ENCODING="gzip, br")
    assert r.status_code == 200 and r["Content-Encoding"] == "gzip"
    assert b"import" in gzip.decompress(body_of(r))
    assert "Accept-Encoding" in r["Vary"]


def test_unhashed_names_are_served_but_cached_briefly(production) -> None:
    r = production.get("/static/css/app.css")
    assert r.status_code == 200 and "immutable" not in r.get("Cache-Control", "")
    assert production.get("/static/vendor/ethers/ethers.js.map").status_code == 404
