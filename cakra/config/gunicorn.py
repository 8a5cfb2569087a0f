"""gunicorn settings every deployment uses: ``gunicorn -c python:cakra.config.gunicorn cakra.config.wsgi:application``.

The access log masks notice numbers and plates in every value it takes from
a request (request line, query string, referrer, headers;
:func:`cakra.config.access_log.request_text_mask`). The format leaves out
the query string and the referrer all the same: what is not written cannot leak.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger, SafeAtoms

from cakra.config.access_log import request_text_mask


# gunicorn ships no type information: its classes are Any to mypy.
class MaskingAtoms(SafeAtoms):  # type: ignore[misc]
    """gunicorn's access-log atoms, each masked as the format reads it: only
    the atoms a format names cost a pass of the mask (gunicorn builds one for
    every request and response header and environ entry), and an atom an
    operator adds to the format is masked all the same."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return request_text_mask(value) if isinstance(value, str) else value


class MaskingGunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with every request-derived atom of the access log masked."""

    atoms_wrapper_class = MaskingAtoms


logger_class = MaskingGunicornLogger
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
