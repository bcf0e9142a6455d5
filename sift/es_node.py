"""A local, real Elasticsearch 8.19 node for development and tests.

Why this exists: the search code is exercised against the real engine, not a mock, and every machine here
(CI included) runs as root, which Elasticsearch refuses. This module fetches the official
integration-test distribution from Maven Central once, unpacks it into a cache, and runs one node per port
with its own state directory (config, data, logs, pid file), so a dev node on 9200 and a test node on another
port share one unpacked distribution.

Layout (``<base>`` is the cache dir, default ``$XDG_CACHE_HOME/sift`` or ``~/.cache/sift``)::

    <base>/elasticsearch-<version>/      unpacked distribution (ES home), read-only in use
    <base>/es-node-<port>/config/        per-node ES_PATH_CONF (copy of the distribution's config + hunspell)
    <base>/es-node-<port>/data/ logs/ tmp/ es.pid

As root, the node runs as the system user ``sift-es``; that user must be able to traverse every parent of
these directories, so when the cache dir lies under a private directory (``/root`` is 0700) ``<base>``
becomes ``/var/tmp/sift-es`` instead. Nothing here changes the permissions of existing parent directories.

The distribution half (fetch, unpack, hunspell, JDK, the ``sift-es`` user) is `sift.es_dist`.

Only the standard library is used, so the CLI and test fixtures can start a node before anything else loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sift.es_dist import (
    DEFAULT_VERSION,
    ES_USER,
    EsDistribution,
    EsNodeError,
    _chown_tree,
    _file_lock,
    _mkdirs,
    _traversable_by_others,
)

__all__ = ["LocalElasticsearch", "NodeStatus", "render_config"]

TRANSPORT_PORT_OFFSET = 100

_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_ES_MAIN_CLASS = b"org.elasticsearch.bootstrap.Elasticsearch"
_CAUSE_RE = re.compile(r"^(?:[\w.$]+(?:Exception|Error)|Caused by): |\]\[(?:ERROR|FATAL)\s*\]")


@dataclass
class NodeStatus:
    """What `LocalElasticsearch.status` sees: our process, and what the port answers."""

    running: bool
    pid: int | None
    url: str
    health: str | None


def render_config(
    port: int,
    data_dir: Path,
    logs_dir: Path,
    extra: Mapping[str, str | int | bool] | None = None,
) -> str:
    """The node's elasticsearch.yml: loopback, single node, no security, no disk watermarks.

    The transport port is ``port + 100`` so that two nodes never pick the same default 9300.
    """
    settings: dict[str, str | int | bool] = {
        "cluster.name": f"sift-{port}",
        "node.name": f"sift-{port}",
        "network.host": "127.0.0.1",
        "http.port": port,
        "transport.port": port + TRANSPORT_PORT_OFFSET,
        "discovery.type": "single-node",
        "xpack.security.enabled": False,
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.destructive_requires_name": False,  # tests delete indices by pattern
        "xpack.ml.enabled": False,  # accepted by this zip (checked), though it ships no ML module
    }
    if extra:
        settings.update(extra)
    lines = ["# Written by search/es_node.py; rewritten on every start.\n"]
    for key, value in settings.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = str(value)
        else:
            rendered = json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
        lines.append(f"{key}: {rendered}\n")
    return "".join(lines)


def _pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (containers' PID 1 often never reaps)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS) or raced: trust kill(0)
    state = stat_line.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"]


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalElasticsearch(EsDistribution):
    """One local Elasticsearch node on ``127.0.0.1:<port>``, managed through its state directory.

    Construction does no I/O; paths are resolved on first use.
    """

    def __init__(
        self,
        port: int = 9200,
        heap: str = "512m",
        cache_dir: Path | None = None,
        state_dir: Path | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        if not 1 <= port <= 65535 - TRANSPORT_PORT_OFFSET:
            raise EsNodeError(f"port {port} out of range (1..{65535 - TRANSPORT_PORT_OFFSET})")
        if not _HEAP_RE.match(heap):
            raise EsNodeError(f"heap {heap!r} is not a JVM size such as 512m or 1g")
        super().__init__(version, cache_dir)
        self.port = port
        self.heap = heap
        self._state_dir = Path(state_dir).expanduser() if state_dir is not None else None

    # ---- paths -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def transport_port(self) -> int:
        return self.port + TRANSPORT_PORT_OFFSET

    @cached_property
    def state_dir(self) -> Path:
        if self._state_dir is not None:
            return self._state_dir.absolute()
        return self.base_dir / f"es-node-{self.port}"

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.state_dir / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "es.pid"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / f"sift-{self.port}.log"

    # ---- process -----------------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise EsNodeError(f"cannot read {self.pid_file}: {exc}") from exc
        return int(text) if text.isdigit() else None

    def _is_our_process(self, pid: int) -> bool:
        """Alive and, where /proc tells, an Elasticsearch server of this state dir (guards PID reuse)."""
        if not _pid_alive(pid):
            return False
        cmdline = _cmdline(pid)
        if cmdline is None:
            return True
        # The server's command line does not carry ES_PATH_CONF, but it does carry ES_TMPDIR, which is ours.
        args = cmdline.split(b"\0")
        return _ES_MAIN_CLASS in cmdline and f"-Djava.io.tmpdir={self.tmp_dir}".encode() in args

    def _find_orphans(self) -> list[int]:
        """Server processes of this node whose pid file is gone (e.g. a start that was interrupted)."""
        found: list[int] = []
        proc = Path("/proc")
        if not proc.is_dir():
            return found
        for entry in proc.iterdir():
            if entry.name.isdigit() and self._is_our_process(int(entry.name)):
                found.append(int(entry.name))
        return found

    def live_pid(self) -> int | None:
        """The PID of this node's server if it is running; a stale pid file is removed.

        Falls back to scanning /proc, so a node whose pid file was lost is still found (and stoppable).
        """
        pid = self._read_pid()
        if pid is not None and self._is_our_process(pid):
            return pid
        if pid is not None or self.pid_file.exists():
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
        orphans = self._find_orphans()
        return orphans[0] if orphans else None

    def health(self, wait_for_yellow: bool = False, timeout: float = 2.0) -> str | None:
        """Cluster status (green/yellow/red) from the port, or None if nothing answers as Elasticsearch."""
        query = "?wait_for_status=yellow&timeout=1s" if wait_for_yellow else ""
        try:
            with urllib.request.urlopen(f"{self.url}/_cluster/health{query}", timeout=timeout) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None  # HTTPError (e.g. 408 while not yet yellow) is a URLError
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, str) else None

    def status(self) -> NodeStatus:
        """Whether our process runs, and what health the port reports (it may be another cluster)."""
        pid = self.live_pid()
        health = self.health() if pid is not None or _port_in_use(self.port) else None
        return NodeStatus(running=pid is not None, pid=pid, url=self.url, health=health)

    def start(self, timeout: float = 120) -> NodeStatus:
        """Start the node (idempotent) and wait until it is at least yellow."""
        deadline = time.monotonic() + timeout
        if self._as_root() and not _traversable_by_others(self.state_dir.parent):
            raise EsNodeError(
                f"state dir {self.state_dir} lies under a directory user {ES_USER!r} cannot enter; "
                "as root pick a state dir under /var/tmp (or another world-traversable place) or leave it unset"
            )
        _mkdirs(self.state_dir)
        with _file_lock(self.state_dir / ".start.lock"):
            pid = self.live_pid()
            if pid is not None:
                return self.wait_ready(max(1.0, deadline - time.monotonic()))
            for port in (self.port, self.transport_port):
                if _port_in_use(port):
                    raise EsNodeError(
                        f"port {port} on 127.0.0.1 is in use by another process (not the node in "
                        f"{self.state_dir}); stop it or choose another port"
                    )
            es_home = self.ensure_distribution()
            env = self._prepare_state(es_home)
            self._launch(es_home, env, deadline)
            return self.wait_ready(max(1.0, deadline - time.monotonic()))

    def _prepare_state(self, es_home: Path) -> dict[str, str]:
        as_root = self._as_root()
        if not (self.config_dir / "jvm.options").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=".config.", dir=self.state_dir))
            shutil.copytree(es_home / "config", tmp / "config", dirs_exist_ok=True)
            if self.config_dir.exists():
                shutil.rmtree(self.config_dir)
            os.rename(tmp / "config", self.config_dir)
            tmp.rmdir()
        self._install_hunspell(self.config_dir)
        for directory in (self.data_dir, self.logs_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "elasticsearch.yml").write_text(render_config(self.port, self.data_dir, self.logs_dir))
        if as_root:
            uid, gid = self._ensure_es_user()
            _chown_tree(self.state_dir, uid, gid)
        return {
            "ES_JAVA_HOME": str(self.java_home()),
            "ES_PATH_CONF": str(self.config_dir),
            "ES_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}",
            "ES_TMPDIR": str(self.tmp_dir),  # not /tmp, which tmp cleaners prune
        }

    def _launch(self, es_home: Path, env: dict[str, str], deadline: float) -> None:
        """Run `bin/elasticsearch -d`, which returns once the server is up (or has failed)."""
        argv = [str(es_home / "bin" / "elasticsearch"), "-d", "-p", str(self.pid_file)]
        if self._as_root():
            runuser = shutil.which("runuser")
            if runuser is None:
                raise EsNodeError("running as root needs `runuser` (util-linux) to drop to " + ES_USER)
            argv = [runuser, "-u", ES_USER, "--", "env", *(f"{k}={v}" for k, v in env.items()), *argv]
            proc_env = dict(os.environ)
        else:
            proc_env = {**os.environ, **env}
        log = self.logs_dir / "launch.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.state_dir,
                env=proc_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C aimed at the caller must not reach the node
            )
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.stop()
                raise EsNodeError(
                    f"Elasticsearch did not come up in time on {self.url}.\n{self._diagnostics(log)}"
                ) from None
        if rc != 0:
            self.stop()
            raise EsNodeError(f"Elasticsearch failed to start (exit {rc}).\n{self._diagnostics(log)}")

    def _diagnostics(self, launch_log: Path | None = None) -> str:
        parts = []
        if launch_log is not None and (text := _tail(launch_log, 20)):
            parts.append(f"--- {launch_log} ---\n{text}")
        log = self.log_file
        if not log.is_file():
            candidates = sorted(self.logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
            log = candidates[-1] if candidates else log
        if text := _tail(log):
            parts.append(f"--- {log} ---\n{text}")
            causes = [ln for ln in text.splitlines() if _CAUSE_RE.search(ln)]
            if causes:  # the cause line is easy to miss under a stack trace
                parts.insert(0, "likely cause:\n  " + "\n  ".join(dict.fromkeys(causes[:4])))
        return "\n".join(parts) or f"(no log output in {self.logs_dir})"

    def wait_ready(self, timeout: float = 120) -> NodeStatus:
        """Poll cluster health until yellow; fail fast, with the log tail, if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.live_pid()
            if pid is None:
                raise EsNodeError(f"Elasticsearch on {self.url} exited while starting.\n{self._diagnostics()}")
            health = self.health(wait_for_yellow=True, timeout=3.0)
            if health is not None and health != "red":
                return NodeStatus(running=True, pid=pid, url=self.url, health=health)
            if time.monotonic() >= deadline:
                raise EsNodeError(
                    f"Elasticsearch on {self.url} not ready after {timeout:.0f} s (health {health}).\n"
                    f"{self._diagnostics()}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM the node, SIGKILL after ``timeout`` s; True if something was stopped."""
        pids = {p for p in [self.live_pid()] if p is not None}
        pids.update(self._find_orphans())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise EsNodeError(f"not allowed to stop pid {pid} (another user's); stop it as root") from exc
        deadline = time.monotonic() + timeout
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while any(_pid_alive(p) for p in pids) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        still = [p for p in pids if _pid_alive(p)]
        if still:
            raise EsNodeError(f"Elasticsearch process(es) {still} survived SIGKILL")
        return bool(pids)

    def wipe(self) -> None:
        """Stop the node and delete its data (keeps config and logs), for a clean test node."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
