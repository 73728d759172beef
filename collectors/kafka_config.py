"""Kafka client security (SSL, SASL PLAIN/SCRAM) for every runwatch client, in one place.

Settings come from ``RUNWATCH_KAFKA_*`` environment variables and/or a Java-style client
properties file (``--kafka-config FILE`` or ``RUNWATCH_KAFKA_CONFIG``); a value from the file
wins over the same setting from the environment. :func:`security_options` turns them into
kafka-python keyword arguments (``security_protocol``, ``sasl_mechanism``,
``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_password``, ``ssl_check_hostname``) that producers, consumers and the
admin client all accept. Nothing configured means ``{}``: plaintext, as before.

Lives in ``collectors`` (not ``runwatch``) because training jobs import the collector without
the monitor's dependencies. Errors are :class:`KafkaConfigError` (a ``ValueError``; the CLI
reports it as a ``runwatch.errors.ConfigError``). No message ever contains a password.

kafka-python only connects after a bootstrap *timeout* when the broker refuses credentials or
the listener wants SASL/SSL; the real cause is only logged. :class:`ErrorTrap` catches those log
records so :func:`explain_failure` can say what went wrong. (kafka-python itself is not imported
here: ``import collectors`` stays light.)
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Mapping

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

CONFIG_ENV = "RUNWATCH_KAFKA_CONFIG"
# setting -> environment variable
ENV = {
    "protocol": "RUNWATCH_KAFKA_SECURITY_PROTOCOL",
    "mechanism": "RUNWATCH_KAFKA_SASL_MECHANISM",
    "username": "RUNWATCH_KAFKA_SASL_USERNAME",
    "password": "RUNWATCH_KAFKA_SASL_PASSWORD",
    "password_file": "RUNWATCH_KAFKA_SASL_PASSWORD_FILE",
    "cafile": "RUNWATCH_KAFKA_SSL_CAFILE",
    "certfile": "RUNWATCH_KAFKA_SSL_CERTFILE",
    "keyfile": "RUNWATCH_KAFKA_SSL_KEYFILE",
    "key_password": "RUNWATCH_KAFKA_SSL_KEY_PASSWORD",
    "check_hostname": "RUNWATCH_KAFKA_SSL_CHECK_HOSTNAME",
}
ENV_NAMES = (CONFIG_ENV, *ENV.values())

# Java client names, and librdkafka's where they differ, -> setting
PROPERTIES = {
    "security.protocol": "protocol",
    "sasl.mechanism": "mechanism",
    "sasl.mechanisms": "mechanism",
    "sasl.username": "username",
    "sasl.password": "password",
    "ssl.ca.location": "cafile",
    "ssl.certificate.location": "certfile",
    "ssl.key.location": "keyfile",
    "ssl.key.password": "key_password",
    "ssl.check.hostname": "check_hostname",
}
# read specially: sasl.jaas.config, ssl.truststore.*, ssl.keystore.*, ssl.endpoint.identification.algorithm
_SPECIAL = ("sasl.jaas.config", "ssl.truststore.location", "ssl.truststore.type",
            "ssl.truststore.password", "ssl.keystore.location", "ssl.keystore.type",
            "ssl.endpoint.identification.algorithm")
_SECRET_OPTIONS = ("sasl_plain_password", "ssl_password")
_LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
}


class KafkaConfigError(ValueError):
    """A Kafka security setting is missing, unknown or inconsistent (never shows a password)."""


class KafkaUnreachableError(ConnectionError):
    """Could not connect; the message says why (credentials, protocol mismatch, ...).

    An ``OSError`` (not a kafka-python error) so this module imports without kafka-python."""


# --------------------------------------------------------------------------- reading
def read_properties(path: str | os.PathLike) -> dict[str, str]:
    """A Java ``.properties`` file: ``key=value``/``key: value``, ``#``/``!`` comments, ``\\``
    line continuations and escapes."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KafkaConfigError(f"cannot read the Kafka client config {path}: {exc.strerror or exc}") from None
    props: dict[str, str] = {}
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line continues
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        m = re.match(r"((?:\\.|[^\s=:\\])*)\s*[=:\s]?\s*(.*)$", line)
        key, value = _unescape(m.group(1)), _unescape(m.group(2).rstrip())
        props[key] = value
    return props


def _unescape(s: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", "f": "\f"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), s)


def parse_jaas(value: str, where: str) -> tuple[str, dict[str, str]]:
    """``<LoginModule> required key="value" ...;`` -> (module, options)."""
    m = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*(.*?)\s*;?\s*$", value, re.S)
    if not m:
        raise KafkaConfigError(
            f"{where} is not a JAAS line; expected "
            f'`<LoginModule> required username="NAME" password="PASSWORD";`')
    module, rest = m.group(1), m.group(3)
    options: dict[str, str] = {}
    pos = 0
    pattern = re.compile(r'\s*([\w.-]+)\s*=\s*(?:"((?:\\.|[^"\\])*)"|([^\s"]+))\s*')
    while pos < len(rest):
        om = pattern.match(rest, pos)
        if not om:
            raise KafkaConfigError(f"{where}: cannot read the options after the login module; "
                                   f'write them as key="value"')
        options[om.group(1)] = _unescape(om.group(2)) if om.group(2) is not None else om.group(3)
        pos = om.end()
    return module, options


def _from_properties(props: Mapping[str, str], where: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}

    def put(field: str, value: str, key: str) -> None:
        out[field] = (value, f"{key} in {where}")

    unknown = [k for k in props if k not in PROPERTIES and k not in _SPECIAL]
    if unknown:
        raise KafkaConfigError(
            f"{where}: unknown Kafka client setting(s) {', '.join(sorted(unknown))}; runwatch reads "
            f"{', '.join(sorted([*PROPERTIES, *_SPECIAL]))} (pass --bootstrap for the address)")
    for key, value in props.items():
        if key in PROPERTIES:
            put(PROPERTIES[key], value, key)
    for kind in ("truststore", "keystore"):
        stype = props.get(f"ssl.{kind}.type", "PEM").strip().upper()
        if f"ssl.{kind}.location" in props and stype != "PEM":
            raise KafkaConfigError(
                f"{where}: ssl.{kind}.type={stype} is not supported (Python reads PEM files only); "
                f"convert it, e.g. `keytool -exportcert -rfc` / `openssl pkcs12 -nodes`, and set "
                f"ssl.{kind}.type=PEM")
    if "ssl.truststore.location" in props:
        put("cafile", props["ssl.truststore.location"], "ssl.truststore.location")
    if "ssl.keystore.location" in props:  # a PEM keystore holds the key and the certificate
        put("certfile", props["ssl.keystore.location"], "ssl.keystore.location")
    if "ssl.endpoint.identification.algorithm" in props:
        algo = props["ssl.endpoint.identification.algorithm"].strip().lower()
        if algo not in ("", "https"):
            raise KafkaConfigError(f"{where}: ssl.endpoint.identification.algorithm must be "
                                   f"https or empty")
        put("check_hostname", "true" if algo == "https" else "false",
            "ssl.endpoint.identification.algorithm")
    if "sasl.jaas.config" in props:
        key = f"sasl.jaas.config in {where}"
        module, options = parse_jaas(props["sasl.jaas.config"], key)
        if module not in _LOGIN_MODULES:
            raise KafkaConfigError(
                f"{key}: login module {module} is not supported; use PlainLoginModule or "
                f"ScramLoginModule (mechanisms {', '.join(MECHANISMS)})")
        mech = props.get("sasl.mechanism", props.get("sasl.mechanisms", "")).strip().upper()
        if mech and mech not in _LOGIN_MODULES[module]:
            raise KafkaConfigError(f"{key}: {module.rsplit('.', 1)[-1]} does not fit "
                                   f"sasl.mechanism={mech}")
        for name in ("username", "password"):
            if name in options:
                out[name] = (options[name], key)
        out["_module_mechanisms"] = (",".join(_LOGIN_MODULES[module]), key)
    return out


def _from_environ(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    out = {}
    for field, name in ENV.items():
        value = environ.get(name)
        if value is not None and value != "":
            out[field] = (value, name)
    return out


# --------------------------------------------------------------------------- building options
def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise KafkaConfigError(f"{where} must be true or false, got {value.strip()!r}")


def _read_secret(path: str, where: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise KafkaConfigError(f"{where}: cannot read the password file {path}: "
                               f"{exc.strerror or exc}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise KafkaConfigError(f"{where}: the password file {path} is empty")
    return secret


def security_options(config_file: str | os.PathLike | None = None, *,
                     environ: Mapping[str, str] | None = None) -> dict:
    """kafka-python keyword arguments for the configured security, ``{}`` for plaintext.

    ``config_file`` [env ``RUNWATCH_KAFKA_CONFIG``]: a client properties file; its values win
    over the ``RUNWATCH_KAFKA_*`` variables of ``environ`` [``os.environ``].
    """
    environ = os.environ if environ is None else environ
    fields = _from_environ(environ)
    if "password" in fields and "password_file" in fields:
        raise KafkaConfigError(f"set only one of {ENV['password']} and {ENV['password_file']}")
    if "password_file" in fields:
        path, where = fields.pop("password_file")
        fields["password"] = (_read_secret(path, where), where)
    config_file = config_file or environ.get(CONFIG_ENV) or None
    if config_file:
        fields.update(_from_properties(read_properties(config_file), str(config_file)))
    module_mechs = fields.pop("_module_mechanisms", None)

    value = {k: v for k, (v, _) in fields.items()}
    where = {k: w for k, (_, w) in fields.items()}
    protocol = value.get("protocol", "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaConfigError(f"{where['protocol']}: unknown security protocol "
                               f"{value['protocol'].strip()!r}; use one of {', '.join(PROTOCOLS)}")
    sasl = protocol.startswith("SASL_")
    ssl = protocol.endswith("SSL")
    how = f"--kafka-config FILE (security.protocol) or {ENV['protocol']}"
    sasl_given = [f for f in ("mechanism", "username", "password") if f in value]
    if sasl_given and not sasl:
        raise KafkaConfigError(
            f"{where[sasl_given[0]]} is a SASL setting but the security protocol is {protocol}; "
            f"use SASL_PLAINTEXT or SASL_SSL ({how})")
    ssl_given = [f for f in ("cafile", "certfile", "keyfile", "key_password", "check_hostname")
                 if f in value]
    if ssl_given and not ssl:
        raise KafkaConfigError(
            f"{where[ssl_given[0]]} is an SSL setting but the security protocol is {protocol}; "
            f"use SSL or SASL_SSL ({how})")
    options: dict = {}
    if protocol != "PLAINTEXT":
        options["security_protocol"] = protocol
    if sasl:
        mechanism = value.get("mechanism", "").strip().upper()
        if not mechanism:
            raise KafkaConfigError(
                f"security protocol {protocol} needs a SASL mechanism: set sasl.mechanism or "
                f"{ENV['mechanism']} to one of {', '.join(MECHANISMS)}")
        if mechanism not in MECHANISMS:
            raise KafkaConfigError(f"{where['mechanism']}: SASL mechanism {mechanism!r} is not "
                                   f"supported; use one of {', '.join(MECHANISMS)}")
        if module_mechs and mechanism not in module_mechs[0].split(","):
            raise KafkaConfigError(f"{module_mechs[1]}: the login module does not fit SASL "
                                   f"mechanism {mechanism} from {where['mechanism']}")
        for field, java in (("username", "username"), ("password", "password")):
            if not value.get(field):
                raise KafkaConfigError(
                    f"SASL {mechanism} needs a {field}: set it in sasl.jaas.config "
                    f'({java}="...") of a --kafka-config file, or set {ENV[field]}'
                    + (f" or {ENV['password_file']}" if field == "password" else ""))
        options.update(sasl_mechanism=mechanism, sasl_plain_username=value["username"],
                       sasl_plain_password=value["password"])
    if ssl:
        for field, opt in (("cafile", "ssl_cafile"), ("certfile", "ssl_certfile"),
                           ("keyfile", "ssl_keyfile")):
            if field in value:
                path = Path(value[field]).expanduser()
                if not path.is_file():
                    raise KafkaConfigError(f"{where[field]}: no such file {path}")
                options[opt] = str(path)
        if "ssl_keyfile" in options and "ssl_certfile" not in options:
            raise KafkaConfigError(f"{where['keyfile']}: a client key needs its certificate "
                                   f"(ssl.certificate.location or {ENV['certfile']})")
        if value.get("key_password"):
            options["ssl_password"] = value["key_password"]
        if "check_hostname" in value:
            options["ssl_check_hostname"] = _bool(value["check_hostname"], where["check_hostname"])
    return options


def describe(options: Mapping) -> str:
    """``options`` for messages and logs, secrets masked."""
    if not options.get("security_protocol"):
        return "PLAINTEXT"
    parts = [options["security_protocol"]]
    if options.get("sasl_mechanism"):
        parts.append(f"{options['sasl_mechanism']} as {options.get('sasl_plain_username')!r}")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if options.get(key):
            parts.append(f"{key[4:]}={options[key]}")
    if options.get("ssl_check_hostname") is False:
        parts.append("no hostname check")
    return ", ".join(parts)


def masked(options: Mapping) -> dict:
    return {k: ("***" if k in _SECRET_OPTIONS and v else v) for k, v in options.items()}


def without_security_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus the Kafka security variables (for clients of a local plaintext broker)."""
    return {k: v for k, v in environ.items() if k not in ENV_NAMES}


# --------------------------------------------------------------------------- explaining failures
class ErrorTrap(logging.Handler):
    """While active (``with ErrorTrap() as trap:``), remembers why kafka-python's connections failed.

    Attached to the ``kafka`` logger, so those records also stop reaching Python's last-resort
    stderr handler when the application configured no logging (one clear line instead of many).

    ``client_ids``: when the block fails, IO threads of clients with these ids that started
    inside it are stopped: kafka-python 3.0 leaves a failed consumer's or admin client's IO
    thread running (one more per reconnect attempt).
    """

    _AUTH = re.compile(r"(SaslAuthenticationFailedError|UnsupportedSaslMechanismError|"
                       r"IllegalSaslStateError|SaslHandshake failed)\W*(.*)")

    def __init__(self, client_ids: tuple[str, ...] = ()):
        super().__init__(logging.WARNING)
        self._io_names = {f"kafka-io-{c}" for c in client_ids}
        self._before: set = set()
        self.auth: str | None = None
        self.tls: str | None = None
        self.dropped_after_connect = 0
        self.dropped_during_setup = 0
        self._logger = logging.getLogger("kafka")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        m = self._AUTH.search(msg)
        if m:
            reason = re.sub(r"^(SaslAuthenticationFailedError:\s*)+", "", m.group(2))
            reason = re.sub(r"\s*\(backoff [^)]*\)\s*$", "", reason).strip()
            if reason.count(")") > reason.count("("):
                reason = reason[:reason.rfind(")")].rstrip()
            self.auth = reason or m.group(1)
        elif "Handshake failed" in msg:
            self.tls = msg.split("Handshake failed", 1)[1].lstrip(": ")
        elif "Bootstrap attempt to" in msg and "socket disconnected" in msg:
            # connected, ApiVersions answered, then the broker hung up at the next request:
            # what a SASL listener does to a client that skips authentication
            self.dropped_after_connect += 1
        elif "Bootstrap connection to" in msg and "socket disconnected" in msg:
            # hung up while the connection was set up (ApiVersions, SASL): kafka-python sometimes
            # sees only this, not the broker's authentication error that came before it
            self.dropped_during_setup += 1

    def __enter__(self) -> "ErrorTrap":
        self._before = set(threading.enumerate()) if self._io_names else set()
        self._logger.addHandler(self)
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._logger.removeHandler(self)
        if exc_type is None or not self._io_names:
            return
        for t in threading.enumerate():
            if t in self._before or t.name not in self._io_names or not t.is_alive():
                continue
            loop = getattr(getattr(t, "_target", None), "__self__", None)  # NetworkSelector
            try:
                loop.stop(timeout_ms=2000)
                loop.close()
            except Exception:  # best effort; a daemon thread does not block exit
                pass


def explain_failure(exc: BaseException, options: Mapping, bootstrap, trap: ErrorTrap) -> tuple[str, bool]:
    """(message, fatal): why a client could not connect; fatal when retrying cannot help
    (the broker refused the credentials or the mechanism)."""
    where = f"Kafka at {bootstrap if isinstance(bootstrap, str) else ','.join(bootstrap)}"
    if trap.auth:
        user = options.get("sasl_plain_username")
        return (f"{where} refused SASL {options.get('sasl_mechanism')} authentication as "
                f"{user!r}: {trap.auth}; check the user name and password (--kafka-config FILE, "
                f"or {ENV['username']} and {ENV['password']})", True)
    if trap.tls:
        return (f"TLS handshake with {where} failed ({trap.tls}); check that the listener uses "
                f"SSL and the CA file ({ENV['cafile']} / ssl.ca.location)", False)
    protocol = options.get("security_protocol") or "PLAINTEXT"
    if trap.dropped_during_setup and protocol.startswith("SASL_"):
        return (f"{where} closed the connection during SASL {options.get('sasl_mechanism')} "
                f"authentication as {options.get('sasl_plain_username')!r}: the user name, "
                f"password or mechanism is probably wrong (--kafka-config FILE, or "
                f"{ENV['username']}, {ENV['password']} and {ENV['mechanism']})", False)
    if trap.dropped_after_connect and protocol in ("PLAINTEXT", "SSL"):
        return (f"{where} closed the connection at the first request after the handshake: the "
                f"listener probably requires SASL (this client uses {protocol}); set the security "
                f"settings with --kafka-config FILE or {ENV['protocol']}", False)
    return (f"cannot connect to {where} ({describe(options)}): {exc}", False)
