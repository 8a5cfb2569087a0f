"""WSGI entry point (gunicorn/uwsgi in production, runserver in the demo)."""

import os

from django.core.wsgi import get_wsgi_application

from cakra.config.gc_tuning import gc_freeze_startup_objects
from cakra.config.malloc import malloc_tune_for_large_bodies

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cakra.config.settings")
# Before the first request: the intake's batch bodies are tens of megabytes.
malloc_tune_for_large_bodies()
application = get_wsgi_application()
# Production serves nothing while a deployment check warns (cakra/config/production.py).
from django.conf import settings  # noqa: E402 - configured by get_wsgi_application

if settings.PRODUCTION:
    from cakra.config.production import deploy_checks_enforce

    deploy_checks_enforce()
# After start-up: what it created lives as long as the process, and full
# collections need not walk it again and again (cakra/config/gc_tuning.py).
gc_freeze_startup_objects()
