"""A real single-node Apache Kafka broker (KRaft) for demos, development and tests.

The broker jars come from Maven Central (``org.apache.kafka:kafka_2.13`` plus a log4j2 binding,
which no Kafka POM brings) and are cached once under ``.cache/kafka/<version>/lib`` in the repo
(``RUNWATCH_CACHE_DIR`` moves it). A broker lives in a data directory that holds its config,
log, KRaft storage and a ``broker.json`` state file, so ``status`` and ``stop`` find it again.

Steps of ``Broker.start``:
1. fetch the jars if the cache lacks them (one ``mvn dependency:copy-dependencies``);
2. write ``server.properties`` and ``log4j2.properties`` into the data directory;
3. format KRaft storage once (``StorageTool format --standalone``); a kept data directory keeps
   its controller port, because ``--standalone`` records that endpoint in the metadata;
4. start ``kafka.Kafka`` in its own process session (Ctrl-C in a terminal does not reach it);
5. wait until the log says ``Kafka Server started`` and the client port accepts connections
   (the client port only opens after the broker is unfenced).

With ``sasl_users={"alice": "secret"}`` the client port is a ``SASL_PLAINTEXT`` listener instead
of ``PLAINTEXT``, with the mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (no unauthenticated
client port remains; the controller listener stays plaintext on loopback). PLAIN users live in
the listener's JAAS line; SCRAM credentials are created at format time (``--add-scram``), or, for
a data directory formatted earlier, through the admin API once the broker is up. The broker
itself talks to its own listener with PLAIN as an internal user whose password is generated and
kept in the data directory.

With ``tls=True`` the client listener speaks TLS (``SSL``, or ``SASL_SSL`` with ``sasl_users``).
The launcher makes its own certificate authority with ``openssl`` once per data directory
(``tls/ca.pem``, the file clients trust: ``ssl.ca.location``) and a broker certificate it signs
for ``127.0.0.1`` and ``localhost``, kept as a PKCS#12 keystore whose generated password stays in
the data directory (mode 0600). The broker trusts the same CA for its own inter-broker
connections.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.resources import cache_root
from runwatch.errors import BrokerError, MissingToolError

if TYPE_CHECKING:
    from runwatch.transport.cluster import ClusterNode

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.5"
READY_LINE = "Kafka Server started"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_LISTENER = "SASL_PLAINTEXT"
CA_FILE = "tls/ca.pem"
_BROKER_USER = "runwatch-broker"
# Names and passwords go into a JAAS line and a --add-scram argument: keep them to characters
# that need no quoting in either.
_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._@+~:/!#%^*()?-]{1,200}")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>local.runwatch</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>{log4j}</version></dependency>
  </dependencies>
  <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin></plugins></build>
</project>
"""

_LOG4J2 = """appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=warn
rootLogger.appenderRef.out.ref=OUT
logger.ready.name=kafka.server.KafkaRaftServer
logger.ready.level=info
"""

_JVM_FLAGS = [
    "-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
]


# three JVMs on a small machine: smaller heaps
_CLUSTER_JVM_FLAGS = ["-Xms192m", "-Xmx384m", *_JVM_FLAGS[2:]]


def cache_dir() -> Path:
    return cache_root() / "kafka" / KAFKA_VERSION


def lib_dir() -> Path:
    return cache_dir() / "lib"


def _require(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise MissingToolError(f"`{tool}` was not found on PATH; the local Kafka broker needs it. Fix: {fix}")
    return path


def fetch_jars(*, quiet: bool = False) -> Path:
    """Resolve the broker's jars from Maven Central into the cache (once); return the lib dir."""
    lib = lib_dir()
    if (lib / ".complete").exists():
        return lib
    _require("java", "apt-get install -y openjdk-17-jre-headless")
    mvn = _require("mvn", "apt-get install -y maven")
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=cache_dir()))
    try:
        (work / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        if not quiet:
            print(f"Fetching Apache Kafka {KAFKA_VERSION} broker jars from Maven Central (once) ...", flush=True)
        proc = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             "-DoutputDirectory=lib"],
            cwd=work, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise BrokerError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
        jar = work / "lib" / f"kafka_2.13-{KAFKA_VERSION}.jar"
        with zipfile.ZipFile(jar) as zf:
            names = set(zf.namelist())
        for cls in ("kafka/Kafka.class", "kafka/tools/StorageTool.class"):
            if cls not in names:
                raise BrokerError(f"{jar.name} lacks {cls}; this Kafka version is not supported")
        (work / "lib" / ".complete").write_text(KAFKA_VERSION)
        if lib.exists():
            shutil.rmtree(lib)
        os.replace(work / "lib", lib)
        return lib
    finally:
        shutil.rmtree(work, ignore_errors=True)


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """{(topic, partition): end offset} of every partition of ``topics`` (tests, benchmarks)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    sasl_users: tuple[str, ...] = ()
    tls: bool = False

    @property
    def protocol(self) -> str:
        return client_protocol(self.tls, bool(self.sasl_users))

    @property
    def ca_file(self) -> Path | None:
        return self.data_dir / CA_FILE if self.tls else None

    @property
    def bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.port}" if self.port else None


def client_protocol(tls: bool, sasl: bool) -> str:
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    return ("SASL_" if sasl else "") + ("SSL" if tls else "PLAINTEXT")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _openssl(*args: str, cwd: Path) -> None:
    openssl = _require("openssl", "apt-get install -y openssl")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")


def make_tls_material(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> str:
    """A CA (``ca.pem``) and a broker keystore (``broker.p12``) it signs, in ``directory``, once;
    returns the keystore password (generated, kept in ``keystore.secret``, mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "keystore.secret"
    if (directory / "broker.p12").exists() and (directory / "ca.pem").exists() and secret.exists():
        return secret.read_text().strip()
    password = secrets.token_urlsafe(18)
    san = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
    (directory / "broker.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n")
    old = os.umask(0o077)  # private keys and the password: owner only
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                 "ca.pem", "-days", "3650", "-subj", "/CN=runwatch local Kafka CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
                 "broker.csr", "-subj", f"/CN={hosts[0]}", cwd=directory)
        _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "broker.pem", "-days", "3650", "-sha256",
                 "-extfile", "broker.ext", cwd=directory)
        _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile",
                 "ca.pem", "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{password}",
                 cwd=directory)
        secret.write_text(password)
    finally:
        os.umask(old)
    os.chmod(directory / "ca.pem", 0o644)
    return password


class Broker:
    """One local broker in ``data_dir``; ``port`` None means: reuse the recorded port or 9092.

    ``sasl_users`` (name -> password): serve clients on a ``SASL_PLAINTEXT`` listener with
    PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for these users [None: a ``PLAINTEXT`` listener].
    ``tls``: the client listener speaks TLS (``SSL`` / ``SASL_SSL``) with a generated CA
    (:attr:`ca_file`) [False; None: as recorded in the data directory].
    """

    def __init__(self, data_dir: str | Path, *, port: int | None = None, extra_config: dict | None = None,
                 sasl_users: dict[str, str] | None = None, tls: bool | None = None,
                 node: "ClusterNode | None" = None):
        self.data_dir = Path(data_dir).resolve()
        self.state_file = self.data_dir / "broker.json"
        state = self._read_state()
        self.port = port or state.get("port") or 9092
        self.controller_port = state.get("controller_port")
        self.extra_config = dict(extra_config or {})
        # A node of a local cluster (runwatch.transport.cluster): its id, the static controller
        # quorum, the cluster id, and the folder shared by all nodes (TLS material, the internal
        # SASL user's password). None: a single node (--standalone).
        self.node = node
        self.shared_dir = Path(node.shared_dir) if node else self.data_dir
        self.tls = bool(state.get("tls", False) if tls is None else tls)
        self.sasl_users = dict(sasl_users or {})
        for name, password in self.sasl_users.items():
            for what, value in (("user name", name), ("password", password)):
                if not isinstance(value, str) or not _SAFE_CREDENTIAL.fullmatch(value):
                    shown = name if what == "user name" else "for " + str(name)
                    raise BrokerError(
                        f"SASL {what} {shown!s} is not usable for the local broker: use 1-200 "
                        f"letters, digits or ._@+~:/!#%^*()?- (no quotes, commas, brackets, "
                        f"spaces or '=')")
            if name == _BROKER_USER:
                raise BrokerError(f"SASL user name {_BROKER_USER} is reserved for the broker itself")
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def protocol(self) -> str:
        """The client listener's ``security.protocol``."""
        return client_protocol(self.tls, bool(self.sasl_users))

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients must trust (``ssl.ca.location``); None without TLS."""
        return self.shared_dir / CA_FILE if self.tls else None

    def client_options(self, user: str | None = None, mechanism: str = "PLAIN") -> dict:
        """kafka-python options for a client of this broker (``user`` one of ``sasl_users``)."""
        options: dict = {"security_protocol": self.protocol} if self.protocol != "PLAINTEXT" else {}
        if self.tls:
            options["ssl_cafile"] = str(self.ca_file)
        if self.sasl_users:
            user = user or next(iter(self.sasl_users))
            options.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                           sasl_plain_password=self.sasl_users[user])
        return options

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, pid: int) -> None:
        # User names only: passwords stay in server.properties (mode 0600).
        self.state_file.write_text(json.dumps(
            {"pid": pid, "port": self.port, "controller_port": self.controller_port,
             "kafka_version": KAFKA_VERSION, "sasl_users": sorted(self.sasl_users),
             "tls": self.tls}))

    def status(self) -> BrokerStatus:
        state = self._read_state()
        pid = state.get("pid")
        running = bool(pid) and _pid_alive(pid) and port_open(state.get("port", self.port))
        return BrokerStatus(running, pid if running else None, state.get("port"), self.data_dir,
                            tuple(state.get("sasl_users") or ()), bool(state.get("tls", False)))

    def _broker_password(self) -> str:
        """The internal user's password: generated once per data directory, kept there."""
        path = self.shared_dir / "broker-sasl.secret"
        try:
            return path.read_text().strip()
        except OSError:
            password = secrets.token_urlsafe(24)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password)
            return password

    def _sasl_properties(self) -> dict:
        broker_pw = self._broker_password()
        users = {_BROKER_USER: broker_pw, **self.sasl_users}
        plain_users = " ".join(f'user_{n}="{pw}"' for n, pw in users.items())
        prefix = f"listener.name.{self.protocol.lower()}"
        props = {
            "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            f"{prefix}.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{_BROKER_USER}" password="{broker_pw}" {plain_users};',
        }
        for mech in SASL_MECHANISMS[1:]:
            props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        return props

    def _scram_args(self) -> list[str]:
        return [arg for name, pw in self.sasl_users.items() for mech in SASL_MECHANISMS[1:]
                for arg in ("--add-scram", f"{mech}=[name={name},password={pw}]")]

    def _upsert_scram_users(self, timeout: float = 30.0) -> None:
        """A data directory formatted earlier: create/refresh SCRAM credentials via the admin API."""
        from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap, security_protocol=self.protocol,
            sasl_mechanism="PLAIN", sasl_plain_username=_BROKER_USER,
            sasl_plain_password=self._broker_password(), client_id="runwatch-broker-setup",
            **({"ssl_cafile": str(self.ca_file)} if self.tls else {}),
            request_timeout_ms=int(timeout * 1000))
        try:
            # one request per mechanism: a request naming a user twice is rejected as a whole
            for mech in SASL_MECHANISMS[1:]:
                result = admin.alter_user_scram_credentials([
                    UserScramCredentialUpsertion(name, ScramMechanism[mech.replace("-", "_")], pw)
                    for name, pw in self.sasl_users.items()])
                failed = {user: err for user, err in (result or {}).items() if err}
                if failed:
                    raise BrokerError(f"{mech} credentials not created: {failed}")
        finally:
            admin.close()

    def _server_properties(self) -> str:
        p, c = self.port, self.controller_port
        client = self.protocol
        replicas = len(self.node.voters) if self.node else 1
        quorum = ({"controller.quorum.voters": ",".join(
                      f"{i}@127.0.0.1:{port}" for i, port in self.node.voters)} if self.node
                  else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{c}"})
        min_isr = str(min(2, replicas))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node.node_id if self.node else 1),
            **quorum,
            "listeners": f"{client}://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"{client}://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
            "log.dirs": str(self.data_dir / "kraft"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": str(replicas),
            "min.insync.replicas": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "8388608",
            "message.max.bytes": str(8 * 1024 * 1024),
            "auto.create.topics.enable": "true",
            # keep every message (Kafka is the record views are rebuilt from); a lab's cluster
            # usually keeps 7 days, which `ingest`/`serve` warn about
            "log.retention.ms": "-1",
        }
        if self.sasl_users:
            props.update(self._sasl_properties())
        if self.node:  # loopback: notice a dead node in seconds, not the default 9 s
            props.update({"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "500"})
        if self.tls:
            password = make_tls_material(self.shared_dir / "tls")
            props.update({
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.shared_dir / "tls" / "broker.p12"),
                "ssl.keystore.password": password,
                "ssl.key.password": password,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.shared_dir / CA_FILE),
            })
        props.update(self.extra_config)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str, jvm: list[str]) -> list[str]:
        java = _require("java", "apt-get install -y openjdk-17-jre-headless")
        return [java, *jvm, f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", str(lib_dir() / "*"), *args]

    def start(self, *, timeout: float = 60.0, quiet: bool = True) -> "Broker":
        if self.launch(quiet=quiet):
            self.wait_ready(timeout=timeout)
        return self

    def launch(self, *, quiet: bool = True) -> bool:
        """Format (once) and start the process; False if it was already running."""
        current = self.status()
        if current.running:
            self.port = current.port
            return False
        fetch_jars(quiet=quiet)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is already in use; pass --port N "
                f"(or stop what listens there)")
        formatted = (self.data_dir / "kraft" / "meta.properties").exists()
        if self.node:
            self.controller_port = dict(self.node.voters)[self.node.node_id]
        if not formatted or not self.controller_port:
            self.controller_port = self.controller_port if self.node else free_port()
            shutil.rmtree(self.data_dir / "kraft", ignore_errors=True)
            formatted = False
        self._formatted_before = formatted
        config = self.data_dir / "server.properties"
        config.touch(mode=0o600)  # may hold SASL passwords
        os.chmod(config, 0o600)
        config.write_text(self._server_properties())
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        if not formatted:
            how = [] if self.node else ["--standalone"]
            cluster_id = self.node.cluster_id if self.node else _cluster_id()
            proc = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", *how,
                           "-t", cluster_id, "-c", str(config), *self._scram_args(),
                           jvm=["-Xmx256m"]),
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise BrokerError(f"formatting KRaft storage in {self.data_dir} failed: "
                                  + (proc.stderr or proc.stdout).strip()[-500:])
        log = open(self.log_file, "ab")
        start_offset = self.log_file.stat().st_size
        self._proc = subprocess.Popen(
            self._java("kafka.Kafka", str(config), jvm=_CLUSTER_JVM_FLAGS if self.node else _JVM_FLAGS),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.data_dir)
        log.close()
        self._write_state(self._proc.pid)
        self._start_offset = start_offset
        return True

    def wait_ready(self, *, timeout: float = 60.0) -> "Broker":
        """Wait until the launched process says it started and its client port accepts."""
        start_offset, formatted = self._start_offset, self._formatted_before
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with code {self._proc.returncode} "
                                  f"while starting; see {self.log_file}: {self._log_tail(start_offset)}")
            with open(self.log_file, "rb") as f:
                f.seek(start_offset)
                ready = READY_LINE.encode() in f.read()
            if ready and port_open(self.port):
                if self.sasl_users and formatted:
                    try:
                        self._upsert_scram_users()
                    except Exception as exc:
                        self.stop()
                        raise BrokerError(f"could not create the SCRAM users on the broker in "
                                          f"{self.data_dir}: {exc}") from None
                return self
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the Kafka broker did not become ready within {timeout:.0f} s; see {self.log_file}")

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        except OSError:
            return ""

    def stop(self, *, timeout: float = 30.0) -> bool:
        """SIGTERM (clean shutdown), then SIGKILL after ``timeout``. True if a broker was stopped."""
        pid = self._proc.pid if self._proc else self._read_state().get("pid")
        if not pid or not _pid_alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            if self._proc is None and not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            self._proc.wait(timeout=10)
        return True

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (fault tests)."""
        pid = self._proc.pid if self._proc else self._read_state().get("pid")
        if pid and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(timeout=10)
