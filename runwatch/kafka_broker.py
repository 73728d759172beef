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
"""

from __future__ import annotations

import base64
import json
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

from runwatch.errors import BrokerError, MissingToolError

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.5"
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "Kafka Server started"

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


def cache_dir() -> Path:
    return Path(os.environ.get("RUNWATCH_CACHE_DIR", REPO_ROOT / ".cache")) / "kafka" / KAFKA_VERSION


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

    @property
    def bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.port}" if self.port else None


class Broker:
    """One local broker in ``data_dir``; ``port`` None means: reuse the recorded port or 9092."""

    def __init__(self, data_dir: str | Path, *, port: int | None = None, extra_config: dict | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.state_file = self.data_dir / "broker.json"
        state = self._read_state()
        self.port = port or state.get("port") or 9092
        self.controller_port = state.get("controller_port")
        self.extra_config = dict(extra_config or {})
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, pid: int) -> None:
        self.state_file.write_text(json.dumps(
            {"pid": pid, "port": self.port, "controller_port": self.controller_port,
             "kafka_version": KAFKA_VERSION}))

    def status(self) -> BrokerStatus:
        state = self._read_state()
        pid = state.get("pid")
        running = bool(pid) and _pid_alive(pid) and port_open(state.get("port", self.port))
        return BrokerStatus(running, pid if running else None, state.get("port"), self.data_dir)

    def _server_properties(self) -> str:
        p, c = self.port, self.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "8388608",
            "message.max.bytes": str(8 * 1024 * 1024),
            "auto.create.topics.enable": "true",
        }
        props.update(self.extra_config)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str, jvm: list[str]) -> list[str]:
        java = _require("java", "apt-get install -y openjdk-17-jre-headless")
        return [java, *jvm, f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", str(lib_dir() / "*"), *args]

    def start(self, *, timeout: float = 60.0, quiet: bool = True) -> "Broker":
        current = self.status()
        if current.running:
            self.port = current.port
            return self
        lib = fetch_jars(quiet=quiet)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.port):
            raise BrokerError(
                f"port {self.port} on 127.0.0.1 is already in use; pass --port N "
                f"(or stop what listens there)")
        formatted = (self.data_dir / "kraft" / "meta.properties").exists()
        if not formatted or not self.controller_port:
            self.controller_port = free_port()
            shutil.rmtree(self.data_dir / "kraft", ignore_errors=True)
            formatted = False
        config = self.data_dir / "server.properties"
        config.write_text(self._server_properties())
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        if not formatted:
            proc = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "--standalone",
                           "-t", _cluster_id(), "-c", str(config), jvm=["-Xmx256m"]),
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise BrokerError(f"formatting KRaft storage in {self.data_dir} failed: "
                                  + (proc.stderr or proc.stdout).strip()[-500:])
        log = open(self.log_file, "ab")
        start_offset = self.log_file.stat().st_size
        self._proc = subprocess.Popen(
            self._java("kafka.Kafka", str(config), jvm=_JVM_FLAGS),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.data_dir)
        log.close()
        self._write_state(self._proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with code {self._proc.returncode} "
                                  f"while starting; see {self.log_file}: {self._log_tail(start_offset)}")
            with open(self.log_file, "rb") as f:
                f.seek(start_offset)
                ready = READY_LINE.encode() in f.read()
            if ready and port_open(self.port):
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
