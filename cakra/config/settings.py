"""Django settings, read from the environment.

Defaults give the embedded system (SQLite, a filesystem broker, simulators) so
that ``make run`` needs no server; production sets ``CAKRA_ENV=production``
and names every secret and server in the environment (see docs/operations.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cakra.config.production import dev_secret_values, environment_name, production_settings_enforce
from cakra.config.secrets import load_secrets
from cakra.demo.regions import DEMO_REGIONS
from cakra.security.proxies import ProxyNetworksError, trusted_networks_from_environment


def _env_bool(name: str, *, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Only known names: a mistyped "prod" must not quietly run as development
# with generated secrets (cakra.config.production).
CAKRA_ENV = environment_name(os.environ.get("CAKRA_ENV"))
PRODUCTION = CAKRA_ENV == "production"
DATA_DIR = Path(os.environ.get("CAKRA_DATA_DIR", Path.cwd() / "var")).resolve()
_SECRETS = load_secrets(production=PRODUCTION, data_dir=DATA_DIR)

SECRET_KEY = _SECRETS["SECRET_KEY"]
DEBUG = _env_bool("CAKRA_DEBUG", default=False)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "ninja",
    "cakra.security",
    "cakra.audit",
    "cakra.registry",
    "cakra.enforcement",
    "cakra.delivery",
    "cakra.api",
    "cakra.backoffice",
    "cakra.portal",
    "cakra.simulators",
    "cakra.demo",
    "cakra.ops",
]

MIDDLEWARE = [
    # First, so that every response carries the security headers: static
    # files (WhiteNoise answers without calling what follows it), errors and
    # the CSRF failure page included.
    "cakra.security.middleware.SecurityHeadersMiddleware",
    # Before anything reads request.is_secure() (the SSL redirect, CSRF's
    # origin checks): X-Forwarded-* only from our own proxies.
    "cakra.security.middleware.ProxyHeadersMiddleware",
    "cakra.security.middleware.ContentLengthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the few CSS files from the web process itself (no separate file
    # server to run for the embedded default; behind a CDN in production).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Separate sessions for citizens and officers, keyed by a hash (cakra.security.sessions).
    "cakra.security.sessions.RealmSessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost: gives back an API request's in-flight slot (cakra.api.quota)
    # however its view ended.
    "cakra.api.quota.ApiKeyLeaseMiddleware",
]

ROOT_URLCONF = "cakra.config.urls"
WSGI_APPLICATION = "cakra.config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "cakra.portal.context.official_identity",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'cakra.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and scheduler share one file: WAL lets readers run beside the
    # writer, IMMEDIATE transactions take the write lock up front (no upgrade
    # deadlocks), and the timeout makes a busy writer wait instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    # A file, not memory, for the test database: end-to-end tests run a real
    # worker process that must see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (sender rate limits, provider health) ------------------------------
# Counters must be shared by every process: Redis in production, the database
# on the embedded default (cakra.delivery.channels.store). The anti-guessing
# limits choose their own store from REDIS_URL (cakra.security.ratelimit).
REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES: dict[str, dict[str, object]]
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "cakra_cache",
            # Django culls a third of the table once it holds MAX_ENTRIES (300
            # by default), live rate-limit counters included, which would let
            # a window start over. Expired rows are still removed at each cull.
            "OPTIONS": {"MAX_ENTRIES": 1_000_000, "CULL_FREQUENCY": 3},
        }
    }

# --- Auth -----------------------------------------------------------------
AUTH_USER_MODEL = "backoffice.Officer"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "backoffice:login"
# Officer sign-in throttling (cakra.backoffice.throttle). Failed password and
# code checks are counted per (officer, client address): CLIENT_FAILURES in
# CLIENT_WINDOW_SECONDS and that address is refused for that officer until
# the window ends. Across all addresses, ACCOUNT_FAILURES in
# ACCOUNT_WINDOW_SECONDS raise an alert (audit event and warning log), and
# until that window ends every address that has failed for the officer is
# refused: a new address still gets its attempt, so the officer is never
# locked out by someone else's guesses.
CAKRA_SIGN_IN_THROTTLE = {
    "CLIENT_FAILURES": int(os.environ.get("CAKRA_SIGN_IN_FAILURES_PER_CLIENT", "5")),
    "CLIENT_WINDOW_SECONDS": int(os.environ.get("CAKRA_SIGN_IN_CLIENT_WINDOW_SECONDS", str(15 * 60))),
    "ACCOUNT_FAILURES": int(os.environ.get("CAKRA_SIGN_IN_FAILURES_PER_ACCOUNT", "50")),
    "ACCOUNT_WINDOW_SECONDS": int(os.environ.get("CAKRA_SIGN_IN_ACCOUNT_WINDOW_SECONDS", str(24 * 3600))),
}
OTP_TOTP_ISSUER = "Cakra ETLE"

# --- Sessions, cookies, transport security ---------------------------------
SECURE = _env_bool("CAKRA_SECURE_COOKIES", default=PRODUCTION)
# Over HTTPS every cookie is host-only and bound to Secure and Path=/ by the
# __Host- prefix (browsers refuse it otherwise), so a sibling subdomain cannot
# plant or overwrite one; plain-HTTP development keeps unprefixed names.
_COOKIE_PREFIX = "__Host-" if SECURE else ""
# The back office's session (SESSION_ENGINE's store, which Django's helpers
# use); the portal's has its own cookie, store realm and lifetime below.
SESSION_ENGINE = "cakra.security.sessions"
SESSION_COOKIE_NAME = f"{_COOKIE_PREFIX}cakra_office"
SESSION_COOKIE_SECURE = SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_PATH = "/"
SESSION_COOKIE_DOMAIN = None
# Officers open the back office from a bookmark, never from a link elsewhere.
SESSION_COOKIE_SAMESITE = "Strict"
SESSION_COOKIE_AGE = 60 * 60 * 8
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Officer sessions: absolute lifetime from the verified sign-in, idle timeout
# (no request for that long), and how recent a re-authentication must be
# for sensitive actions (cakra.backoffice.access).
CAKRA_OFFICER_SESSION_SECONDS = SESSION_COOKIE_AGE
CAKRA_OFFICER_IDLE_SECONDS = int(os.environ.get("CAKRA_OFFICER_IDLE_SECONDS", str(15 * 60)))
CAKRA_OFFICER_REAUTH_SECONDS = int(os.environ.get("CAKRA_OFFICER_REAUTH_SECONDS", str(5 * 60)))
# Citizens arrive from the link in a notice email: Lax keeps that navigation working.
CAKRA_PORTAL_SESSION_COOKIE_NAME = f"{_COOKIE_PREFIX}cakra_portal"
CAKRA_PORTAL_SESSION_COOKIE_SAMESITE = "Lax"
# How long a successful lookup opens its notice to this browser session; a
# portal session holds only such grants, so it lives as long.
CAKRA_PORTAL_GRANT_SECONDS = int(os.environ.get("CAKRA_PORTAL_GRANT_SECONDS", str(30 * 60)))
CAKRA_PORTAL_SESSION_COOKIE_AGE = CAKRA_PORTAL_GRANT_SECONDS
CSRF_COOKIE_NAME = f"{_COOKIE_PREFIX}csrftoken"
CSRF_COOKIE_SECURE = SECURE
CSRF_COOKIE_PATH = "/"
CSRF_COOKIE_DOMAIN = None
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SECURE_SSL_REDIRECT = _env_bool("CAKRA_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True  # an official .go.id portal is HTTPS-only, always
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")
# The networks our reverse proxies / load balancers connect from, or [] for
# "none" (clients connect directly); None when unset, which a deploy check
# refuses in production. Rate limits key on the client address this yields
# (cakra.security.proxies). A malformed value, or the retired hop-count
# variable, stops the process here.
try:
    CAKRA_TRUSTED_PROXY_NETWORKS = trusted_networks_from_environment(os.environ)
except ProxyNetworksError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# Requests larger than this are refused before parsing (evidence is capped
# separately per image in cakra.enforcement.evidence).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("CAKRA_MAX_REQUEST_BYTES", str(12 * 1024 * 1024)))
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# --- I18N -----------------------------------------------------------------
LANGUAGE_CODE = "id"
LANGUAGES = [("id", "Bahasa Indonesia"), ("en", "English")]
LOCALE_PATHS = [Path(__file__).resolve().parent.parent / "locale"]
TIME_ZONE = "Asia/Jakarta"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it to exist
WHITENOISE_USE_FINDERS = not PRODUCTION
# Only our own pages use the stylesheets: no `Access-Control-Allow-Origin: *`
# (WhiteNoise's default), which scanners report and nothing here needs.
WHITENOISE_ALLOW_ALL_ORIGINS = False

# --- Storage: evidence is private, never served as a static file ----------
EVIDENCE_ROOT = Path(os.environ.get("CAKRA_EVIDENCE_ROOT", DATA_DIR / "evidence"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": DATA_DIR / "files"}},
    "evidence": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": EVIDENCE_ROOT, "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
    },
    # Production serves hashed, compressed copies made by collectstatic; the
    # embedded default serves straight from the apps (no build step).
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Field encryption (see cakra.security.crypto) --------------------------
CAKRA_FIELD_KEYS = _SECRETS["CAKRA_FIELD_KEYS"]
CAKRA_FIELD_KEY_ACTIVE = os.environ.get("CAKRA_FIELD_KEY_ACTIVE", "")
CAKRA_LOOKUP_KEY = _SECRETS["CAKRA_LOOKUP_KEY"]
# Root of the audit trail's keys (chain MAC, anchor MAC), derived per purpose
# with HKDF (cakra.security.crypto.purpose_key); does nothing else.
CAKRA_AUDIT_KEY = _SECRETS["CAKRA_AUDIT_KEY"]

# --- Audit trail: independent hash chains, one per writer process (mod N) ----
CAKRA_AUDIT_CHAINS = int(os.environ.get("CAKRA_AUDIT_CHAINS", "16"))

# --- Official identity: what citizens are told to trust ---------------------
# The base URL goes into every message link: production has no default, and
# refuses anything but https on the official domain (or a subdomain).
CAKRA_PORTAL_BASE_URL = os.environ.get(
    "CAKRA_PORTAL_BASE_URL", "" if PRODUCTION else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
).rstrip("/")
CAKRA_OFFICIAL_DOMAIN = os.environ.get("CAKRA_OFFICIAL_DOMAIN", "etle.korlantas.polri.go.id")
if PRODUCTION:
    production_settings_enforce(
        debug=DEBUG,
        secrets=_SECRETS,
        dev_secrets=dev_secret_values(DATA_DIR),
        receipt_secrets={name: value for name, value in os.environ.items() if name.startswith("CAKRA_RECEIPT_SECRET_")},
        base_url=CAKRA_PORTAL_BASE_URL,
        official_domain=CAKRA_OFFICIAL_DOMAIN,
    )

# --- Channels ---------------------------------------------------------------
# Only channels listed here enter a delivery plan; a region's channel order is
# filtered by it. More channels arrive with their adapters.
# Outside production every channel the simulators stand in for; a
# deployment enables each channel once its providers are configured.
CAKRA_ENABLED_CHANNELS = _env_list("CAKRA_ENABLED_CHANNELS", "email" if PRODUCTION else "whatsapp,sms,email")
CAKRA_EMAIL = {
    "HOST": os.environ.get("CAKRA_SMTP_HOST", "127.0.0.1"),
    "PORT": int(os.environ.get("CAKRA_SMTP_PORT", "1025")),
    "USERNAME": os.environ.get("CAKRA_SMTP_USERNAME", ""),
    "PASSWORD": os.environ.get("CAKRA_SMTP_PASSWORD", ""),
    "SECURITY": os.environ.get("CAKRA_SMTP_SECURITY", "starttls" if PRODUCTION else "none"),
    "TIMEOUT": float(os.environ.get("CAKRA_SMTP_TIMEOUT", "10")),
    "DKIM_SELECTOR": os.environ.get("CAKRA_DKIM_SELECTOR", "cakra1"),
    "DKIM_PRIVATE_KEY": _SECRETS["CAKRA_DKIM_PRIVATE_KEY"],
}
CAKRA_SINK = {
    "SMTP_PORT": int(os.environ.get("CAKRA_SINK_SMTP_PORT", "1025")),
    "HTTP_PORT": int(os.environ.get("CAKRA_SINK_HTTP_PORT", "8025")),
    "MAILDIR": Path(os.environ.get("CAKRA_SINK_MAILDIR", DATA_DIR / "sink" / "mail")),
}

# --- Celery -------------------------------------------------------------------
_BROKER_DIR = DATA_DIR / "broker"
# ("localhost" only keeps kombu from warning about a missing host name.)
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://localhost/")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    (_BROKER_DIR / "queue").mkdir(parents=True, exist_ok=True)
    (_BROKER_DIR / "processed").mkdir(parents=True, exist_ok=True)
    (_BROKER_DIR / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # Broadcast (pidbox) exchanges; kombu's default is ./control in the cwd.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
# Worker logs go through the same structlog formatting as everything else.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ACKS_LATE = True
# Celery's Django fixup closes the database connections after every task
# unless this is set: a new PostgreSQL backend (fork, auth, session setup)
# per message. Reuse them, recycling after this many tasks; Django's
# CONN_MAX_AGE and health checks still apply.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# A queue message is only a trigger: sweepers find work whose trigger was lost.
CELERY_BEAT_SCHEDULE = {
    "evidence-derive-sweep": {"task": "cakra.enforcement.tasks.evidence_derive_sweep_task", "schedule": 600.0},
    # Lost delivery triggers and unconfirmed deliveries (cakra.delivery.sweeper); a
    # run that cannot start within its interval expires rather than piling up.
    "delivery-sweep-stuck": {
        "task": "cakra.delivery.tasks.delivery_sweep_stuck_task",
        "schedule": 60.0,
        "options": {"expires": 55.0},
    },
    "delivery-sweep-unconfirmed": {
        "task": "cakra.delivery.tasks.delivery_sweep_unconfirmed_task",
        "schedule": 300.0,
        "options": {"expires": 290.0},
    },
    # Rate-limit counters of ended windows (the database store; Redis expires its own).
    "ratelimit-counters-purge": {
        "task": "cakra.security.tasks.ratelimit_counters_purge_task",
        "schedule": 3600.0,
        "options": {"expires": 3000.0},
    },
    # Expired portal and back-office sessions (what `cakra clearsessions` does).
    "sessions-expired-purge": {
        "task": "cakra.security.tasks.sessions_expired_purge_task",
        "schedule": 3600.0,
        "options": {"expires": 3000.0},
    },
    # Evidence files no row references (a crash between writing and committing).
    "evidence-orphans-sweep": {
        "task": "cakra.enforcement.tasks.evidence_orphans_sweep_task",
        "schedule": 3600.0,
        "options": {"expires": 3000.0},
    },
    # Personal data past its retention period (cakra.ops.retention).
    "retention-purge": {
        "task": "cakra.ops.tasks.retention_purge_task",
        "schedule": 86400.0,
        "options": {"expires": 43200.0},
    },
}

# --- Retention of personal data (UU PDP; cakra.ops.retention) ----------------
# Days after which personal data is removed while the rows stay for
# statistics (region, article, day, fine, outcome). The notice lifecycle
# (paid, heard in court, closed) does not exist yet, so the clock starts at
# what does: the notice's issue, a rejection's decision, a capture's receipt.
CAKRA_RETENTION = {
    # A notice's evidence photos, plate, the link to its vehicle, owner and
    # the addresses it was sent to. Two years: prosecution of a traffic
    # offence (pelanggaran) lapses after one year (KUHP art. 78), plus a year
    # for the court process, objections and STNK blocks to end. Shorten once
    # the notice lifecycle records when a case is settled.
    "NOTICE_DAYS": int(os.environ.get("CAKRA_RETENTION_NOTICE_DAYS", "730")),
    # A rejected capture's photos and plate. No proceedings follow; 90 days
    # leave time for a supervisor's review of rejections and complaints.
    "REJECTED_DAYS": int(os.environ.get("CAKRA_RETENTION_REJECTED_DAYS", "90")),
    # A capture no officer ever decided (still "received": typically an
    # unregistered plate left in the queue): its photos and plate. A year
    # after receipt, prosecution has lapsed (KUHP art. 78), so no notice can
    # follow any more; the period is counted from receipt, which is later
    # than the capture, and is far longer than any review backlog, so a
    # capture still being worked on is never touched.
    "UNDECIDED_DAYS": int(os.environ.get("CAKRA_RETENTION_UNDECIDED_DAYS", "365")),
    # Violations per transaction (and per audit event) of a purge run.
    "BATCH_SIZE": 500,
}

# --- Logging: structured, and never personal data ----------------------------
LOGGING_CONFIG = None
from cakra.config.logging import configure_logging  # noqa: E402

configure_logging(json_output=PRODUCTION, level=os.environ.get("CAKRA_LOG_LEVEL", "INFO"))

# --- Evidence intake (api slice: cakra.enforcement.evidence) -----------------
# Per image, checked on the decoded bytes (the request cap above bounds the sum).
CAKRA_EVIDENCE_MAX_BYTES = int(os.environ.get("CAKRA_EVIDENCE_MAX_BYTES", str(5 * 1024 * 1024)))
# Width x height above this is refused from the header alone (decompression
# bombs); 40 MP is far above any ETLE camera and below Pillow's own warning.
CAKRA_EVIDENCE_MAX_PIXELS = int(os.environ.get("CAKRA_EVIDENCE_MAX_PIXELS", str(40_000_000)))

# --- Citizen portal (portal slice: cakra.portal) ------------------------------
# Lookup rate limits as (attempts, window seconds). Per client address: every
# lookup counts; mobile carriers put many citizens behind one address (CGNAT),
# so watch the 429 counts and raise these if real users hit them. Per notice
# number: failed tries only, counted whether or not the number exists (see
# cakra.portal.lookup for why).
CAKRA_PORTAL_RATE_LIMITS = {
    "client_burst": (int(os.environ.get("CAKRA_PORTAL_LOOKUPS_PER_MINUTE", "10")), 60),
    "client_daily": (int(os.environ.get("CAKRA_PORTAL_LOOKUPS_PER_DAY", "100")), 86400),
    "number_failures": (int(os.environ.get("CAKRA_PORTAL_FAILURES_PER_NUMBER_HOUR", "10")), 3600),
}
# (CAKRA_PORTAL_GRANT_SECONDS is set with the session cookies above.)
# The language choice cookie gets the same flags as the session cookie (scanners flag it otherwise).
LANGUAGE_COOKIE_SECURE = SECURE
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
# A CSRF refusal shows citizens (and officers) a plain bilingual "please try
# again" page rather than Django's technical one.
CSRF_FAILURE_VIEW = "cakra.portal.views.csrf_failure"


# --- Delivery receipts (receipts slice: cakra.delivery.receipts, cakra.api.receipts) ---
# Every provider that posts signed receipts to /api/v1/receipts/<channel>/<name>:
# the channel it reports on, the provider name its deliveries carry
# (Delivery.provider, i.e. the adapter's), and the secret it signs with
# (HMAC-SHA256, at least 32 characters). In production each secret comes from
# the environment and a source without one is simply not configured (its
# requests get 401). On the embedded default the sink's secret is derived from
# SECRET_KEY (kept in dev-secrets.json), so the web and sink processes agree
# with no set-up.
def _receipt_secret(env_name: str, label: str) -> str:
    if os.environ.get(env_name):
        return os.environ[env_name]
    if PRODUCTION:
        return ""
    return hmac.new(SECRET_KEY.encode(), f"cakra.receipt-webhook:{label}".encode(), hashlib.sha256).hexdigest()


_SINK_RECEIPT_SECRET = _receipt_secret("CAKRA_RECEIPT_SECRET_SMTP_SINK", "smtp-sink")
CAKRA_RECEIPT_WEBHOOKS: dict[str, dict[str, str]] = {}
if _SINK_RECEIPT_SECRET:
    CAKRA_RECEIPT_WEBHOOKS["smtp-sink"] = {"CHANNEL": "email", "PROVIDER": "smtp", "SECRET": _SINK_RECEIPT_SECRET}
# A batch of 1,000 email events is about 250 KB; anything near this cap is not a receipt batch.
CAKRA_RECEIPT_MAX_BYTES = int(os.environ.get("CAKRA_RECEIPT_MAX_BYTES", str(2 * 1024 * 1024)))
CAKRA_RECEIPT_MAX_EVENTS = 1000
# A signed request older or newer than this is refused: a captured request cannot be replayed later.
CAKRA_RECEIPT_SIGNATURE_TOLERANCE_SECONDS = 300
# The SMTP sink reports what became of each message it stored, as a provider's
# event webhook would (RECEIPT_URL "" turns it off; off by default in production).
CAKRA_SINK["RECEIPT_URL"] = (
    os.environ.get("CAKRA_SINK_RECEIPT_URL")
    or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/api/v1/receipts/email/smtp-sink"
    if _env_bool("CAKRA_SINK_REPORT_RECEIPTS", default=not PRODUCTION)
    else ""
)
CAKRA_SINK["RECEIPT_PROVIDER"] = "smtp-sink"
CAKRA_SINK["RECEIPT_SECRET"] = _SINK_RECEIPT_SECRET

# --- Delivery sweeper and cut-off timeout (dispatch slice: cakra.delivery.sweeper) ---
# Leases after which a delivery counts as stuck; tune in docs/operations.md.
CAKRA_SWEEPER = {
    # pending this long: its trigger message was lost (broker restart, crash before publish).
    "PENDING_LEASE_SECONDS": float(os.environ.get("CAKRA_SWEEP_PENDING_LEASE_SECONDS", "300")),
    # sending this long: the worker died mid-send. Keep far above the longest
    # provider call (CAKRA_SMTP_TIMEOUT): a slow but live send would go out twice.
    "SENDING_LEASE_SECONDS": float(os.environ.get("CAKRA_SWEEP_SENDING_LEASE_SECONDS", "600")),
    # failed_temporary longer than the retry backoff cap plus this: its retry
    # message was lost. Must cover the retry jitter.
    "RETRY_MARGIN_SECONDS": float(os.environ.get("CAKRA_SWEEP_RETRY_MARGIN_SECONDS", "300")),
    # Rows per kind per run, oldest first.
    "BATCH_SIZE": int(os.environ.get("CAKRA_SWEEP_BATCH_SIZE", "5000")),
    # A channel queue with more messages waiting than this (each carries up
    # to CAKRA_SEND_BATCH deliveries) is behind, not losing messages: its
    # pending deliveries are not re-enqueued meanwhile.
    "MAX_BACKLOG": int(os.environ.get("CAKRA_SWEEP_MAX_BACKLOG", "20")),
}
# Deliveries per send message and per chunk a worker claims, sends over one
# provider session and records in one transaction (docs/performance.md).
CAKRA_SEND_BATCH = int(os.environ.get("CAKRA_SEND_BATCH", "100"))
# Channels whose sent deliveries fall back when not confirmed (delivered/read)
# within the region's digital_cutoff_hours. Channels that never confirm (post)
# stay out.
CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS = _env_list("CAKRA_UNCONFIRMED_TIMEOUT_CHANNELS", "whatsapp,sms,email")

# --- Bulk intake (bulk-intake slice: POST /api/v1/violations/batch) ----------
# The batch route reads its own body, after authentication, up to this cap
# (DATA_UPLOAD_MAX_MEMORY_SIZE above stays the cap of every other route). A
# web process holds about twice the body while parsing it (bytes, then the
# parsed text) and one chunk of decoded images after that, so the default,
# 128 MiB, admits ~300 captures of one 1080p JPEG (or ~80 of four images)
# and bounds a batch to ~300 MB of memory per web process.
CAKRA_MAX_BATCH_BYTES = int(os.environ.get("CAKRA_MAX_BATCH_BYTES", str(128 * 1024 * 1024)))

# --- Per-API-key quotas (cakra.api.quota) ---------------------------------
# Each API key gets a token bucket (RATE_PER_SECOND, refilled continuously,
# up to BURST requests at once) and at most MAX_IN_FLIGHT requests in
# progress across every web process; beyond either the request is answered
# 429 with Retry-After, so one client's flood cannot starve the others. An
# in-flight slot is a lease of LEASE_SECONDS, so a web process that dies
# mid-request frees its slot when the lease ends. The defaults leave room
# for a region's back office sending batches from several threads. Keys can
# be given their own values by prefix in CAKRA_API_KEY_LIMITS_JSON, e.g.
# {"ab12cd34ef56": {"RATE_PER_SECOND": 100, "MAX_IN_FLIGHT": 32}}; 0 turns a
# limit off for that key. Counters live in Redis when REDIS_URL is set,
# otherwise in their own tables (cakra.api.quota).
CAKRA_API_KEY_LIMITS: dict[str, object] = {
    "RATE_PER_SECOND": float(os.environ.get("CAKRA_API_RATE_PER_SECOND", "50")),
    "BURST": int(os.environ.get("CAKRA_API_BURST", "100")),
    "MAX_IN_FLIGHT": int(os.environ.get("CAKRA_API_MAX_IN_FLIGHT", "16")),
    "LEASE_SECONDS": float(os.environ.get("CAKRA_API_LEASE_SECONDS", "330")),
    "KEYS": json.loads(os.environ.get("CAKRA_API_KEY_LIMITS_JSON", "{}")),
}

# --- Providers, failover and sender rate limits (providers slice: cakra.delivery.channels.registry) ---
# Shaped like DATABASES: provider name -> CHANNEL, BACKEND (a ChannelAdapter),
# PRIORITY (lower first), SENDER_IDENTITY (whose rate limit a send spends: one
# relay account, one WhatsApp number, one SMS sender ID), RATE_PER_SECOND and
# BURST for that identity, and OPTIONS (the backend's own keys). The name is
# what deliveries record as their provider (and receipts are matched on).
# The default is the SMTP relay of the CAKRA_SMTP_* variables (the sink in
# development) with the options of CAKRA_EMAIL above, which stays the sender
# domain's DKIM key for `cakra dkim dns-record` and the sink. More providers,
# or changes to this one, come from CAKRA_PROVIDERS_JSON, merged by name;
# secrets are referenced by variable name ("PASSWORD_ENV": "VAR"), never
# inline (cakra/delivery/channels/provider_settings.py). `cakra check`
# validates all of it (ids cakra.E101-E112, cakra/delivery/checks.py).
from cakra.delivery.channels.provider_settings import providers_from_environment  # noqa: E402

# --- HTTP SMS gateway (Twilio style): status callbacks and the simulator (sms-http slice:
# cakra.delivery.channels.sms_http, cakra.api.sms_callbacks, cakra.simulators.smsgateway) ---
# The gateway signs its status callbacks with the account's auth token, the
# one the adapter authenticates with: one secret, in CAKRA_SMS_HTTP_AUTH_TOKEN
# (the provider entry reads it with "AUTH_TOKEN_ENV"). In development it is
# derived from SECRET_KEY, so the web process and the simulator agree.
_SMS_HTTP_AUTH_TOKEN = _receipt_secret("CAKRA_SMS_HTTP_AUTH_TOKEN", "sms-http")
# POST /api/v1/receipts/sms/<name>. URL is the callback's public address exactly
# as the gateway calls it (the adapter's STATUS_CALLBACK_URL): the signature
# covers it, and it is checked against this configured value, never against
# the request's Host header (cakra/api/sms_callbacks.py says why).
CAKRA_SMS_CALLBACKS: dict[str, dict[str, str]] = {}
if _SMS_HTTP_AUTH_TOKEN:
    CAKRA_SMS_CALLBACKS["sms-http"] = {
        "PROVIDER": "sms-http",
        "AUTH_TOKEN": _SMS_HTTP_AUTH_TOKEN,
        "URL": os.environ.get("CAKRA_SMS_HTTP_CALLBACK_URL", f"{CAKRA_PORTAL_BASE_URL}/api/v1/receipts/sms/sms-http"),
    }
CAKRA_SMS_GATEWAY_SIM = {
    "HTTP_PORT": int(os.environ.get("CAKRA_SMS_GATEWAY_SIM_PORT", "8027")),
    "ACCOUNT_SID": os.environ.get("CAKRA_SMS_GATEWAY_SIM_ACCOUNT_SID", "AC" + "c4a7" * 8),
    "AUTH_TOKEN": _SMS_HTTP_AUTH_TOKEN,
    "LATENCY_MS": float(os.environ.get("CAKRA_SMS_GATEWAY_SIM_LATENCY_MS", "0")),
    "FAILURE_RATE": float(os.environ.get("CAKRA_SMS_GATEWAY_SIM_FAILURE_RATE", "0")),
    "SEED": int(os.environ["CAKRA_SMS_GATEWAY_SIM_SEED"]) if os.environ.get("CAKRA_SMS_GATEWAY_SIM_SEED") else None,
    "CALLBACK_DELAY_MS": float(os.environ.get("CAKRA_SMS_GATEWAY_SIM_CALLBACK_DELAY_MS", "200")),
    # The account's limit (429, code 20429); 0 turns it off.
    "RATE_PER_SECOND": float(os.environ.get("CAKRA_SMS_GATEWAY_SIM_RATE_PER_SECOND", "1000")),
    "BURST": int(os.environ.get("CAKRA_SMS_GATEWAY_SIM_BURST", "1000")),
}

# --- SMSC simulator (cakra smsc-sim: cakra.simulators.smsc) -------------------
# SMPP v3.4 on 127.0.0.1:SMPP_PORT, phone pages on HTTP_PORT. The bind
# password is derived from SECRET_KEY outside production (SMPP allows 8
# characters); an SMPP provider pointed at the simulator uses SYSTEM_ID and
# this PASSWORD. SENDER_IDS empty: any sender ID is accepted.
_SMSC_SIM_PASSWORD = os.environ.get("CAKRA_SMSC_SIM_PASSWORD") or (
    "" if PRODUCTION else hmac.new(SECRET_KEY.encode(), b"cakra.smsc-sim:password", hashlib.sha256).hexdigest()[:8]
)
CAKRA_SMSC_SIM = {
    "SMPP_PORT": int(os.environ.get("CAKRA_SMSC_SIM_PORT", "2775")),
    "HTTP_PORT": int(os.environ.get("CAKRA_SMSC_SIM_HTTP_PORT", "8026")),
    "SYSTEM_ID": os.environ.get("CAKRA_SMSC_SIM_SYSTEM_ID", "cakra"),
    "PASSWORD": _SMSC_SIM_PASSWORD,
    "SENDER_IDS": _env_list("CAKRA_SMSC_SIM_SENDER_IDS", ""),
    "LATENCY_MS": float(os.environ.get("CAKRA_SMSC_SIM_LATENCY_MS", "0")),
    "FAILURE_RATE": float(os.environ.get("CAKRA_SMSC_SIM_FAILURE_RATE", "0")),
    "SEED": int(os.environ["CAKRA_SMSC_SIM_SEED"]) if os.environ.get("CAKRA_SMSC_SIM_SEED") else None,
    "RECEIPT_DELAY_MS": float(os.environ.get("CAKRA_SMSC_SIM_RECEIPT_DELAY_MS", "200")),
    # submit_sm per second and connection before ESME_RTHROTTLED; 0: unlimited.
    "THROUGHPUT_PER_SECOND": int(os.environ.get("CAKRA_SMSC_SIM_THROUGHPUT_PER_SECOND", "1000")),
    # Send a receipt before its submit_sm_resp (the race a fast SMSC creates).
    "RECEIPT_BEFORE_RESPONSE": _env_bool("CAKRA_SMSC_SIM_RECEIPT_BEFORE_RESPONSE", default=False),
}

# WhatsApp's three secrets, read (or, outside production, derived from
# SECRET_KEY) once here: the provider's access token, the app secret that
# signs webhooks and the handshake's verify token. The simulator checks and
# signs with the same values, so the two sides agree with no set-up.
_WHATSAPP_ACCESS_TOKEN = _receipt_secret("CAKRA_WHATSAPP_ACCESS_TOKEN", "whatsapp-sim-token")
_WHATSAPP_APP_SECRET = _receipt_secret("CAKRA_WHATSAPP_APP_SECRET", "whatsapp-sim-app-secret")
_WHATSAPP_VERIFY_TOKEN = _receipt_secret("CAKRA_WHATSAPP_VERIFY_TOKEN", "whatsapp-sim-verify-token")
_WHATSAPP_SIM_PORT = int(os.environ.get("CAKRA_WHATSAPP_SIM_PORT", "8028"))

# Outside production the phone channels' providers are the simulators
# (`make run` starts them); a deployment adds its real ones with
# CAKRA_PROVIDERS_JSON, secrets by variable name (docs/providers.md).
_PHONE_PROVIDER_DEFAULTS: dict[str, dict[str, object]] = (
    {}
    if PRODUCTION
    else {
        "whatsapp": {
            "CHANNEL": "whatsapp",
            "BACKEND": "cakra.delivery.channels.whatsapp.WhatsAppCloudAdapter",
            "PRIORITY": 10,
            "SENDER_IDENTITY": "whatsapp:cloud-main",
            # Meta's default throughput per business number.
            "RATE_PER_SECOND": 80,
            "BURST": 80,
            "OPTIONS": {
                "BASE_URL": os.environ.get("CAKRA_WHATSAPP_BASE_URL", f"http://127.0.0.1:{_WHATSAPP_SIM_PORT}"),
                "API_VERSION": os.environ.get("CAKRA_WHATSAPP_API_VERSION", "v21.0"),
                "ACCESS_TOKEN": _WHATSAPP_ACCESS_TOKEN,
                "TIMEOUT": 10,
            },
        },
        "smpp": {
            "CHANNEL": "sms",
            "BACKEND": "cakra.delivery.channels.smpp.SmppSmsAdapter",
            "PRIORITY": 10,
            "SENDER_IDENTITY": "smpp:cakra",
            "RATE_PER_SECOND": 500,
            "BURST": 500,
            "OPTIONS": {
                "HOST": os.environ.get("CAKRA_SMPP_HOST", "127.0.0.1"),
                "PORT": int(os.environ.get("CAKRA_SMPP_PORT", str(CAKRA_SMSC_SIM["SMPP_PORT"]))),
                "SYSTEM_ID": os.environ.get("CAKRA_SMPP_SYSTEM_ID", str(CAKRA_SMSC_SIM["SYSTEM_ID"])),
                "PASSWORD": str(CAKRA_SMSC_SIM["PASSWORD"]),
                "TIMEOUT": 10,
                "WINDOW": 10,
                "ENQUIRE_LINK_SECONDS": 30,
            },
        },
        "sms-http": {
            "CHANNEL": "sms",
            "BACKEND": "cakra.delivery.channels.sms_http.HttpSmsAdapter",
            "PRIORITY": 20,  # after SMPP: the operator's own link first, the gateway as failover
            "SENDER_IDENTITY": "sms-http:main",
            "RATE_PER_SECOND": 200,
            "BURST": 200,
            "OPTIONS": {
                "BASE_URL": os.environ.get(
                    "CAKRA_SMS_HTTP_BASE_URL", f"http://127.0.0.1:{CAKRA_SMS_GATEWAY_SIM['HTTP_PORT']}"
                ),
                "ACCOUNT_SID": os.environ.get("CAKRA_SMS_HTTP_ACCOUNT_SID", CAKRA_SMS_GATEWAY_SIM["ACCOUNT_SID"]),
                "AUTH_TOKEN": _SMS_HTTP_AUTH_TOKEN,
                "STATUS_CALLBACK_URL": CAKRA_SMS_CALLBACKS.get("sms-http", {}).get("URL", ""),
                "TIMEOUT": 10,
            },
        },
    }
)
CAKRA_PROVIDERS = providers_from_environment(
    defaults={
        **_PHONE_PROVIDER_DEFAULTS,
        "smtp": {
            "CHANNEL": "email",
            "BACKEND": "cakra.delivery.channels.email.SmtpEmailAdapter",
            "PRIORITY": 10,
            "SENDER_IDENTITY": os.environ.get("CAKRA_SMTP_SENDER_IDENTITY", "smtp:relay-main"),
            "RATE_PER_SECOND": float(os.environ.get("CAKRA_SMTP_RATE_PER_SECOND", "1000")),
            "BURST": int(os.environ.get("CAKRA_SMTP_BURST", "1000")),
            "OPTIONS": dict(CAKRA_EMAIL),
        },
    },
    environ=os.environ,
)
# Failover (cakra.delivery.channels.health): a provider with at least
# MIN_ATTEMPTS attempts in the last WINDOW_SECONDS, more than MAX_ERROR_RATE of
# them failed (retryable or throttled), goes after the healthy ones until its
# failures age out. Workers share counts every SYNC_SECONDS.
CAKRA_PROVIDER_HEALTH = {
    "WINDOW_SECONDS": 60,
    "BUCKET_SECONDS": 10,
    "MIN_ATTEMPTS": int(os.environ.get("CAKRA_PROVIDER_MIN_ATTEMPTS", "20")),
    "MAX_ERROR_RATE": float(os.environ.get("CAKRA_PROVIDER_MAX_ERROR_RATE", "0.5")),
    "SYNC_SECONDS": 1.0,
}
# Sender rate limits (cakra.delivery.ratelimit): waits up to PATIENCE_SECONDS
# are slept in the worker, longer ones re-schedule the task (no attempt
# spent); a provider's "slow down" holds the identity for its retry-after,
# at most MAX_HOLD_SECONDS (DEFAULT_HOLD_SECONDS when it names none).
CAKRA_SENDER_RATE_LIMITS = {
    "PATIENCE_SECONDS": float(os.environ.get("CAKRA_RATE_LIMIT_PATIENCE_SECONDS", "0.5")),
    "MAX_HOLD_SECONDS": 600.0,
    "DEFAULT_HOLD_SECONDS": 30.0,
    "STORE_DOWN_WAIT_SECONDS": 5.0,
}

# --- WhatsApp Cloud API simulator (cakra.simulators.whatsapp; `cakra whatsapp-sim`) ---
# A local stand-in for Meta's Graph API on 127.0.0.1:HTTP_PORT (the adapter's
# base URL is http://127.0.0.1:<port>, version and phone_number_id in the
# path). Outside production the access token, app secret (which signs its
# webhooks, X-Hub-Signature-256) and verify token are derived from SECRET_KEY,
# so the web process and the simulator agree with no set-up. Its status and
# inbound webhooks go to WEBHOOK_URL ("" turns them off; off by default in
# production). BUSINESS_NUMBERS: {phone_number_id: {"display_phone_number",
# "verified_name"}}; TEMPLATES_FILE: the approved templates (a JSON list of
# {"name", "language", "category", "body"}). The rest shapes its behaviour:
# messages per second per number (130429 beyond), one message per recipient
# every PAIR_RATE_SECONDS (131056; 0 = off), latency, a random share of sends
# answered 131000, and the statuses' timing.
CAKRA_WHATSAPP_SIM: dict[str, object] = {
    "HTTP_PORT": _WHATSAPP_SIM_PORT,
    "ACCESS_TOKEN": _WHATSAPP_ACCESS_TOKEN,
    "APP_SECRET": _WHATSAPP_APP_SECRET,
    "VERIFY_TOKEN": _WHATSAPP_VERIFY_TOKEN,
    "WABA_ID": os.environ.get("CAKRA_WHATSAPP_SIM_WABA_ID", "102290129340398"),
    # The demo regions' official numbers by default (cakra.demo.regions): the
    # same ids the regions send from, with the names their phones show.
    "BUSINESS_NUMBERS": json.loads(os.environ["CAKRA_WHATSAPP_SIM_BUSINESS_NUMBERS_JSON"])
    if os.environ.get("CAKRA_WHATSAPP_SIM_BUSINESS_NUMBERS_JSON")
    else {
        region["whatsapp_phone_number_id"]: {
            "display_phone_number": "".join(ch for ch in region["whatsapp_sender"] if ch.isdigit()),
            "verified_name": region["whatsapp_display_name"],
        }
        for region in DEMO_REGIONS
    },
    "TEMPLATES_FILE": os.environ.get(
        "CAKRA_WHATSAPP_SIM_TEMPLATES_FILE",
        str(Path(__file__).resolve().parent.parent / "delivery" / "data" / "whatsapp_templates.json"),
    ),
    "WEBHOOK_URL": (
        os.environ.get("CAKRA_WHATSAPP_SIM_WEBHOOK_URL")
        or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/api/v1/webhooks/whatsapp/whatsapp-sim"
        if _env_bool("CAKRA_WHATSAPP_SIM_WEBHOOKS", default=not PRODUCTION)
        else ""
    ),
    "RATE_PER_SECOND": float(os.environ.get("CAKRA_WHATSAPP_SIM_RATE_PER_SECOND", "80")),
    "PAIR_RATE_SECONDS": float(os.environ.get("CAKRA_WHATSAPP_SIM_PAIR_RATE_SECONDS", "0")),
    "LATENCY_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_LATENCY_MS", "0")),
    "LATENCY_JITTER_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_LATENCY_JITTER_MS", "0")),
    "FAILURE_RATE": float(os.environ.get("CAKRA_WHATSAPP_SIM_FAILURE_RATE", "0")),
    "SEED": int(os.environ["CAKRA_WHATSAPP_SIM_SEED"]) if os.environ.get("CAKRA_WHATSAPP_SIM_SEED") else None,
    "DELIVERED_DELAY_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_DELIVERED_DELAY_MS", "0")),
    "READ_DELAY_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_READ_DELAY_MS", "0")),
    "SKIP_DELIVERED_RATE": float(os.environ.get("CAKRA_WHATSAPP_SIM_SKIP_DELIVERED_RATE", "0")),
    "OUT_OF_ORDER_RATE": float(os.environ.get("CAKRA_WHATSAPP_SIM_OUT_OF_ORDER_RATE", "0")),
    "MAX_MESSAGES": int(os.environ.get("CAKRA_WHATSAPP_SIM_MAX_MESSAGES", "10000")),
    "WEBHOOK_BATCH_SIZE": int(os.environ.get("CAKRA_WHATSAPP_SIM_WEBHOOK_BATCH_SIZE", "100")),
    "WEBHOOK_BATCH_DELAY_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_WEBHOOK_BATCH_DELAY_MS", "50")),
    "WEBHOOK_MAX_TRIES": int(os.environ.get("CAKRA_WHATSAPP_SIM_WEBHOOK_MAX_TRIES", "6")),
    "WEBHOOK_RETRY_BASE_MS": float(os.environ.get("CAKRA_WHATSAPP_SIM_WEBHOOK_RETRY_BASE_MS", "1000")),
}

# --- WhatsApp webhook and automatic answers (cakra.api.whatsapp, cakra.delivery.inbound) ---
# One entry per Meta app posting to /api/v1/webhooks/whatsapp/<name>: the
# provider name its deliveries carry (CAKRA_PROVIDERS), the app secret that
# signs each POST (X-Hub-Signature-256) and the verify token of the GET
# handshake. In production both come from CAKRA_WHATSAPP_APP_SECRET and
# CAKRA_WHATSAPP_VERIFY_TOKEN (none: not configured, every request refused);
# elsewhere they are derived from SECRET_KEY as the sink's receipt secret is,
# so the web process and the WhatsApp simulator agree with no set-up.
CAKRA_WHATSAPP_WEBHOOKS: dict[str, dict[str, str]] = {}
if _WHATSAPP_APP_SECRET and _WHATSAPP_VERIFY_TOKEN:
    CAKRA_WHATSAPP_WEBHOOKS[os.environ.get("CAKRA_WHATSAPP_WEBHOOK_NAME", "whatsapp-sim")] = {
        "PROVIDER": os.environ.get("CAKRA_WHATSAPP_WEBHOOK_PROVIDER", "whatsapp"),
        "APP_SECRET": _WHATSAPP_APP_SECRET,
        "VERIFY_TOKEN": _WHATSAPP_VERIFY_TOKEN,
    }
# Meta posts at most a few hundred updates at once, each well under 2 KB.
CAKRA_WHATSAPP_WEBHOOK_MAX_BYTES = int(os.environ.get("CAKRA_WHATSAPP_WEBHOOK_MAX_BYTES", str(1024 * 1024)))
# At most one automatic answer per sender per interval (no loops with another bot).
CAKRA_WHATSAPP_AUTO_REPLY = {
    "MIN_INTERVAL_SECONDS": float(os.environ.get("CAKRA_WHATSAPP_AUTO_REPLY_INTERVAL_SECONDS", str(30 * 60))),
}
