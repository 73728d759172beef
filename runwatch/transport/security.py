"""Kafka client security for the runwatch commands: :mod:`runwatch.collectors.kafka_config` with the
CLI's error type and argument.

Every runwatch client (collector, materializer consumer and admin client, alert publisher,
``loadgen``, ``watch``) takes its security options from here, so one ``--kafka-config FILE`` or
one set of ``RUNWATCH_KAFKA_*`` variables configures them all; see ``docs`` / the README's
"Kafka security" section for the settings.
"""

from __future__ import annotations

import os

from runwatch.collectors.kafka_config import CONFIG_ENV, KafkaConfigError, security_options
from runwatch.errors import ConfigError


def kafka_options(config_file: str | os.PathLike | None = None) -> dict:
    """kafka-python security options from ``config_file`` and the environment; ConfigError on
    anything invalid (one line, never a password)."""
    try:
        return security_options(config_file)
    except KafkaConfigError as exc:
        raise ConfigError(f"Kafka security settings: {exc}") from None


def add_argument(parser) -> None:
    """``--kafka-config FILE`` for a sub-command that talks to Kafka."""
    parser.add_argument(
        "--kafka-config", metavar="FILE", default=os.environ.get(CONFIG_ENV) or None,
        help="Kafka client properties (security.protocol, sasl.mechanism, sasl.jaas.config, "
             "ssl.ca.location, ...); its values win over the RUNWATCH_KAFKA_* variables "
             f"[env {CONFIG_ENV}]")
