import pytest


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches (engine books, system account ids) outlive a test's
    database; each test starts without them as a fresh process would."""
    from accounts import services
    from trading.services.books import engine_cache_clear

    engine_cache_clear()
    services._system_ids.clear()
    yield
    engine_cache_clear()
    services._system_ids.clear()


def pytest_configure(config):
    from django.conf import settings

    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
