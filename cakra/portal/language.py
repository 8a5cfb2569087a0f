"""Bahasa Indonesia first: the portal ignores the browser's Accept-Language.

Many Indonesian phones run with an English system language, and a citizen
comparing the portal with an Indonesian letter or message should see the same
words. So the portal speaks Indonesian unless the citizen pressed the English
switch (Django's ``set_language``, which stores the choice in a cookie).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation


def portal_language(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
        language = chosen if chosen in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE
        translation.activate(language)
        return view(request, *args, **kwargs)

    return wrapper
