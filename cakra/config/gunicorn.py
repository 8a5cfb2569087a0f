"""gunicorn settings every deployment uses: ``gunicorn -c python:cakra.config.gunicorn cakra.config.wsgi:application``.

The access log masks notice numbers and plates in every value it takes from
a request (request line, query string, referrer, headers;
:func:`cakra.config.access_log.request_text_mask`). The format leaves out
the query string and the referrer all the same: what is not written cannot leak.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from cakra.config.access_log import request_text_mask


# gunicorn ships no type information: its Logger is Any to mypy.
class MaskingGunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with every request-derived atom of the access log masked."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return {key: request_text_mask(value) if isinstance(value, str) else value for key, value in atoms.items()}


logger_class = MaskingGunicornLogger
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
