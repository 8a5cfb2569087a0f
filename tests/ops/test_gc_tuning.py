"""The web processes' collector setting (cakra.config.gc_tuning)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import gc, json, sys
import cakra.config.wsgi
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "views_loaded": "cakra.api.endpoints" in sys.modules and "cakra.portal.views" in sys.modules,
}))
"""


def test_loading_the_wsgi_application_loads_the_views_and_freezes_what_start_up_made() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cakra.config.settings"}
    out = subprocess.check_output([sys.executable, "-c", PROBE], env=env, text=True)  # noqa: S603
    found = json.loads(out.strip().splitlines()[-1])

    # The views are imported before the freeze (Django would import them on
    # the first request, after it), and start-up leaves ~100,000 objects.
    assert found["views_loaded"] is True
    assert found["frozen"] > 50_000, found
