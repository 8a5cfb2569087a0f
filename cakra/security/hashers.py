"""Password hashers. Production uses Django's Argon2id defaults."""

from django.contrib.auth.hashers import Argon2PasswordHasher


class TestArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id with a cheap cost, for the test suite only (cakra.config.test_settings)."""

    time_cost = 1
    memory_cost = 1024
    parallelism = 1
