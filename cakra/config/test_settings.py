"""Settings for the test suite: the real settings, with an isolated data dir.

pytest-django imports settings before any conftest runs, so the data dir
(dev secrets, SQLite test database, evidence, broker folders, sink) is chosen
here. Each test run gets a fresh one unless CAKRA_DATA_DIR names one;
child processes started by end-to-end tests inherit it through the environment.
"""

import os
import tempfile

os.environ.setdefault("CAKRA_DATA_DIR", tempfile.mkdtemp(prefix="cakra-test-"))

from cakra.config.settings import *  # noqa: F403

# Argon2 still, with a small memory and time cost: the production parameters
# (100 MiB per hash) would make each officer-login test take a quarter second.
PASSWORD_HASHERS = ["cakra.security.hashers.TestArgon2PasswordHasher"]

# Existing tests plan email only; tests of WhatsApp, SMS and fallback across
# them enable those channels themselves (the default of a running system is
# whatsapp, sms, email).
CAKRA_ENABLED_CHANNELS = ["email"]
