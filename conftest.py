import pytest


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches (engine books, depth snapshots, system and public account ids)
    outlive a test's database; each test starts without them as a fresh process would."""
    from ledger import selectors, services
    from trading.depth import snapshots_clear
    from trading.services.books import engine_cache_clear

    def clear() -> None:
        engine_cache_clear()
        snapshots_clear()
        services._system_ids.clear()
        selectors._public_ids.clear()

    clear()
    yield
    clear()


@pytest.fixture(autouse=True)
def _account_updates_settled():
    """`accountUpdate`s are read by a thread of their own, a moment after a change: none
    is left waiting or being read when a test ends and its database is emptied (set up
    after pytest-django's database fixtures, so torn down before them)."""
    yield
    from realtime import account_updates

    account_updates.settle()


def pytest_configure(config):
    import os

    from django.conf import settings

    # A test run shares the machine's Redis with whatever else runs there (a demo, a
    # benchmark): a channel prefix of its own keeps their messages apart. Set in the
    # environment too, for the servers the end-to-end tests start.
    prefix = f"test{os.getpid()}"
    os.environ["CHANNEL_LAYER_PREFIX"] = prefix
    config_ = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    if "prefix" in config_:
        config_["prefix"] = prefix

    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
