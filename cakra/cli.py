"""The ``cakra`` console command: Django's management commands under one name.

``cakra apikey create --region B``, ``cakra audit verify``, ``cakra demo``,
``cakra run`` and every Django command (``cakra migrate``) work the same way.
"""

from __future__ import annotations

import os
import sys

from django.core.management import execute_from_command_line


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cakra.config.settings")
    execute_from_command_line(["cakra", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
