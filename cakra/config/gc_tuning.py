"""Garbage-collector settings for the long-running web processes.

A web process imports Django, the project and their dependencies once:
several hundred thousand objects (modules, classes, functions, URL
patterns, templates) that live as long as the process. CPython's cyclic
collector walks every tracked object in its oldest generation on each full
collection, and the intake's batch requests, which keep a hundred rows and
their documents alive for the whole request, promote enough objects to set
off full collections again and again: each of them walked the start-up
objects too, for nothing (a measurable share of a web process's CPU under
the bench's intake load, in ``gc_collect_main``: docs/performance.md).

``gc.freeze()`` after start-up moves those objects to a permanent
generation that collections skip. Collections still run as before for
everything created afterwards, so reference cycles made while serving
requests are still found and freed.
"""

from __future__ import annotations

import gc

from django.urls import get_resolver


def gc_freeze_startup_objects() -> int:
    """Load the URL configuration (Django does so on the first request, and
    with it every view module), collect once, then exempt every surviving
    object from later collections; return how many."""
    get_resolver().url_patterns  # noqa: B018 - the property imports the views
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
