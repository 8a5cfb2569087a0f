"""Cakra: trusted ETLE confirmation notices."""

from cakra.config.celery import app as celery_app

__all__ = ["celery_app"]
