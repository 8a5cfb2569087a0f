"""structlog on top of the standard library: JSON lines in production, readable
lines on a developer's terminal. Log ids, never names, phones, addresses, NIK."""

from __future__ import annotations

import logging.config

import structlog

from cakra.config.access_log import structlog_mask_processor


def configure_logging(*, json_output: bool, level: str) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Last: whatever a library or a request put into an event, no notice
        # number or plate leaves it (cakra.config.access_log).
        structlog_mask_processor,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                    "foreign_pre_chain": shared,
                }
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                # Django's request logger prints the path of 4xx answers; paths
                # may carry notice numbers, so only server errors are logged.
                "django.request": {"level": "ERROR"},
                "django.server": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
