"""One settings module, driven by environment variables.

With no DATABASE_URL / REDIS_URL the exchange runs on embedded SQLite and the in-memory
channel layer, so that a bare machine shows a live exchange with one command.
Production differs only by environment: DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG,
ALLOWED_HOSTS and the others README's "Production" lists.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY") or ("insecure-local-only-key" if DEBUG else None)
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = [
    h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    # The bottom layer of the apps; the layers are in ledger/__init__.py.
    "ledger",
    "accounts",
    "trading",
    "realtime.apps.RealtimeConfig",
]

# Under ASGI, Django's middleware run async hop to a thread and back for each of their
# request and response hooks, unless a sync-only middleware below them makes the whole
# chain above it run in the request's thread. RequestGuardMiddleware is sync-only and
# last on purpose: every middleware then runs in one thread, three thread hops per
# request instead of fifteen (about 5 ms of CPU per API request, docs/benchmarks.md). It
# still refuses a request before any view (and CSRF's process_view) sees it.
MIDDLEWARE = [
    # First: a request refused for the time it queued costs nothing else.
    "dexsite.middleware.RequestQueueLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /static/ from this process (dexsite/staticfiles.py), before sessions and the rest.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dexsite.middleware.RequestGuardMiddleware",
]

# The largest request body accepted (bytes); past it, 413 PAYLOAD_TOO_LARGE. A batch of
# 20 orders is a few kilobytes.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(256 * 1024)))

# Seconds a request may wait for a thread (from the router's X-Request-Start stamp) before
# it is refused unrun with 503 OVERLOADED (dexsite/middleware.py); 0: no limit.
REQUEST_QUEUE_TIMEOUT = float(os.environ.get("REQUEST_QUEUE_TIMEOUT", "2"))

ROOT_URLCONF = "dexsite.urls"
ASGI_APPLICATION = "dexsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and os.environ.get(
    "DB_POOL_MAX"
):
    # Under Django's ASGI handler (HTTP_WORKERS=0) every sync request runs in a fresh
    # thread, so per-thread persistent connections (CONN_MAX_AGE) are never reused and
    # each request would open a new PostgreSQL connection: set DB_POOL_MAX then, for a
    # process-wide pool. The web role's HTTP worker threads (dexsite/asgi.py) live as
    # long as the process and keep a connection each, which costs less than taking one
    # from a pool for every request (docs/benchmarks.md); tests and commands too.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("DB_POOL_MIN", "2")),
        "max_size": int(os.environ["DB_POOL_MAX"]),
        "timeout": 10,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DB_CONN_MAX_AGE", "60"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DB_SERVER_SIDE_BINDING", True
):
    # Parameters bound by the server, and each statement a connection repeats (the order
    # path's dozen) prepared after 5 uses, so that PostgreSQL parses and plans it once
    # per connection instead of once per order. Django turns psycopg's preparing off
    # unless told (for transaction-mode poolers such as PgBouncer before 1.21, which
    # need DB_SERVER_SIDE_BINDING=0).
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["server_side_binding"] = True
    options["prepare_threshold"] = int(os.environ.get("DB_PREPARE_THRESHOLD", "5"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; a busy timeout lets concurrent requests wait instead
    # of failing with "database is locked" in the embedded run.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Tests on a file too, as the embedded run has it: Django's default, an in-memory
    # database, is in shared-cache mode, whose table locks fail a statement at once
    # ("database table is locked") while another thread of the process (the clock of
    # account updates) reads, where a file's locks wait out the busy timeout.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", f"{DATABASES['default']['NAME']}.test"
    )

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: one PUBLISH per group message, whatever the group's size, where
            # the core layer pushes once per member (see docs/benchmarks.md).
            "BACKEND": os.environ.get(
                "CHANNEL_LAYER_BACKEND", "dexsite.channel_layer.PubSubChannelLayer"
            ),
            # A prefix of its own keeps one deployment's (or test run's) groups apart
            # from another's on a shared Redis: pub/sub channels ignore the db number.
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds throttle counts: shared by every web process through Redis, or
# per process in the embedded run.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "dexsite"),
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The dashboard's browser libraries come from npm (`npm ci`, pinned in package-lock.json)
# and are served from node_modules as static/vendor/<package>/<file>, never committed:
# the one build of each that the pages load.
NPM_STATIC_FILES = [
    "lightweight-charts/dist/lightweight-charts.standalone.production.mjs",
    "ethers/dist/ethers.min.js",
]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "dexsite.staticfiles.NpmFinder",
]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
# With DEBUG off, `collectstatic` must run before the web processes start: it writes
# hashed, compressed copies and the manifest that pages name them by (a page rendered
# without it fails). With DEBUG on, files are served as they are from the sources.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "dexsite.staticfiles.HashedStaticFilesStorage"
        )
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.permissions.ApiKeyScopes",
    ],
    # Proxies in front of the web processes whose X-Forwarded-For entries to trust for
    # the client address (throttles); 0 = use the socket's address, which no client
    # can forge.
    "NUM_PROXIES": int(os.environ.get("NUM_PROXIES", "0")),
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["dexsite.api.DecimalJSONParser"],
    "EXCEPTION_HANDLER": "dexsite.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "dexsite exchange API",
    "DESCRIPTION": "REST API of the exchange: markets, orders, fills, positions, balances.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "CAMELIZE_NAMES": False,
}

# WebSockets open at once per client address (as NUM_PROXIES has it) and per account,
# across every web process (counted in Redis); past either a new socket is closed with
# 4008 TOO_MANY_SOCKETS (docs/api.md). 0: no limit.
WS_MAX_SOCKETS_PER_ADDRESS = int(os.environ.get("WS_MAX_SOCKETS_PER_ADDRESS", "20"))
WS_MAX_SOCKETS_PER_ACCOUNT = int(os.environ.get("WS_MAX_SOCKETS_PER_ACCOUNT", "10"))

# Exchange knobs.
PAPER_FAUCET_COOLDOWN = int(os.environ.get("PAPER_FAUCET_COOLDOWN", str(24 * 3600)))
PAPER_FAUCET_AMOUNTS = {"USDC": "100000", "CXPT": "1000"}

# Abuse control, not security (see docs/accounts.md): "N/second|minute|hour|day" per
# scope, each overridable as THROTTLE_RATE_<SCOPE>, e.g. THROTTLE_RATE_LOGIN_IP=100/hour.
THROTTLE_RATES = {
    scope: os.environ.get(f"THROTTLE_RATE_{scope.upper()}", rate)
    for scope, rate in {
        "signup": "20/hour",  # per client address
        "login_ip": "60/hour",  # session login and /auth/token, per client address
        "login_account": "20/hour",  # the same, per username
        "faucet": "10/hour",  # faucet and paper reset, per trader
        "link_wallet": "30/hour",  # challenges and answers, per trader
        "withdraw": "30/hour",  # per trader
        "deposit": "30/hour",  # deposit notices, per trader
    }.items()
}
# Wallet linking (EIP-4361): the domain and URI the message names default to the host
# the request reached; the chain id to Ethereum mainnet.
WALLET_LINK_DOMAIN = os.environ.get("WALLET_LINK_DOMAIN", "")
WALLET_LINK_URI = os.environ.get("WALLET_LINK_URI", "")
WALLET_LINK_CHAIN_ID = int(os.environ.get("WALLET_LINK_CHAIN_ID", "1"))
WALLET_LINK_TTL = int(os.environ.get("WALLET_LINK_TTL", "600"))  # seconds
WALLETS_MAX = 10
# Vault: what may be deposited and withdrawn (REAL), and who confirms transfers.
VAULT_ASSETS = ("USDC", "CXPT")
# The EVM chain the vault contract lives on (docs/accounts.md). Without CHAIN_RPC_URL no
# chain is watched: staff confirm deposits and send withdrawals (accounts/chain.py).
CHAIN_RPC_URL = os.environ.get("CHAIN_RPC_URL", "")
# What a browser wallet is told to add (wallet_addEthereumChain); the node's URL unless the
# node the browser reaches is another.
CHAIN_PUBLIC_RPC_URL = os.environ.get("CHAIN_PUBLIC_RPC_URL", CHAIN_RPC_URL)
CHAIN_ID = int(os.environ.get("CHAIN_ID", "31337"))  # anvil's
CHAIN_NAME = os.environ.get("CHAIN_NAME", "Local development chain")
# Blocks that must hold a deposit (its own included) before it is credited.
CHAIN_CONFIRMATIONS = max(1, int(os.environ.get("CHAIN_CONFIRMATIONS", "3")))
CHAIN_POLL_SECONDS = float(os.environ.get("CHAIN_POLL_SECONDS", "1"))
# A development chain (anvil): test tokens may be minted and its accounts are public.
CHAIN_DEVELOPMENT = env_bool("CHAIN_DEVELOPMENT", CHAIN_ID == 31337)
# The withdrawal signer's hot-wallet key is read from the environment by the watcher
# alone (CHAIN_WITHDRAWAL_KEY, or a file named by CHAIN_WITHDRAWAL_KEY_FILE), never kept
# in settings, the repository or the logs (accounts/services/chain_withdrawals.py).
VAULT_CHAIN_ADAPTER = os.environ.get(
    "VAULT_CHAIN_ADAPTER",
    "accounts.chain.VaultWatcher" if CHAIN_RPC_URL else "accounts.chain.StaffConfirmation",
)
# Deposit notices of one trader that may wait for confirmation at once.
VAULT_PENDING_DEPOSITS_MAX = int(os.environ.get("VAULT_PENDING_DEPOSITS_MAX", "5"))
IDEMPOTENCY_KEY_TTL = int(os.environ.get("IDEMPOTENCY_KEY_TTL", str(24 * 3600)))
API_KEYS_MAX = 20  # keys a trader makes for bots
# Conditional orders one account may have waiting per mode: they reserve nothing, and the
# clock's trigger sweep reads every one of them every 50 ms (docs/benchmarks.md).
CONDITIONAL_ORDERS_MAX = int(os.environ.get("CONDITIONAL_ORDERS_MAX", "100"))
API_LOGIN_KEYS_KEPT = 20  # keys from signup / auth/token still valid per trader

if not DEBUG:
    # HTTPS only (README, "Production"): a TLS proxy in front sets X-Forwarded-Proto:
    # https (replacing any the client sent). Over plain HTTP every page redirects to
    # https://, and browsers do not store secure cookies sent over plain HTTP, so
    # sign-in and forms fail; trying production settings without TLS takes
    # SECURE_SSL_REDIRECT=false, SECURE_COOKIES=false and SECURE_HSTS_SECONDS=0.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

TEST_RUNNER = "dexsite.test_runner.PytestTestRunner"

# Risk engine. The random-walk demo feed keeps the embedded run alive; production
# lists its oracle feed classes (comma separated) in INDEX_FEEDS.
INDEX_FEEDS = [
    f
    for f in os.environ.get(
        "INDEX_FEEDS", "trading.feeds.RandomWalkFeed" if "DATABASE_URL" not in os.environ else ""
    ).split(",")
    if f
]
INDEX_STALE_SECONDS = int(os.environ.get("INDEX_STALE_SECONDS", "120"))
# Without a feed the clock refuses to start (an index unfed for INDEX_STALE_SECONDS
# pauses funding and liquidations), unless the index is set by hand on purpose.
INDEX_MANUAL = env_bool("INDEX_MANUAL", False)
LIQUIDATION_FEE_RATE = os.environ.get("LIQUIDATION_FEE_RATE", "0.005")
FUNDING_INTEREST_8H = os.environ.get("FUNDING_INTEREST_8H", "0.0001")

# Orders that several threads of one process place on one book at once share one
# transaction (group commit), at most this many per transaction; 1 turns it off.
ORDER_GROUP_MAX = int(os.environ.get("ORDER_GROUP_MAX", "32"))

# Where orders are matched (`trading.matcher`): "embedded", in the process that took the
# request; or "redis", in `manage.py runmatcher` processes that own the books, reached
# over Redis (REDIS_URL). How long the API waits for a matcher to take a request before
# it answers 503 MATCHER_UNAVAILABLE (nothing done), and the keys' prefix in Redis.
MATCHER = os.environ.get("MATCHER", "embedded")
if MATCHER not in ("embedded", "redis") or (MATCHER == "redis" and not REDIS_URL):
    raise ImproperlyConfigured("MATCHER is embedded, or redis with REDIS_URL set")
MATCHER_TIMEOUT = float(os.environ.get("MATCHER_TIMEOUT", "5"))
# (Deployments that share a Redis set CHANNEL_LAYER_PREFIX apart; the matcher's keys follow.)
MATCHER_PREFIX = os.environ.get(
    "MATCHER_PREFIX", os.environ.get("CHANNEL_LAYER_PREFIX", "asgi") + ".matcher"
)
