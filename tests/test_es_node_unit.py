"""Fast tests of the local Elasticsearch manager that never start Elasticsearch.

They cover what breaks silently: the rendered config, pid-file handling, path placement when root, the
unpacking of the distribution, and the error messages a developer sees.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sift import es_dist, es_node
from sift.es_dist import EsNodeError
from sift.es_node import LocalElasticsearch, NodeStatus, render_config


def _parse_yml(text: str) -> dict[str, str]:
    pairs = (line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _free_port() -> int:
    """A free port whose transport port (port + 100) is valid too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + es_node.TRANSPORT_PORT_OFFSET <= 65535:
            return port


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalElasticsearch, "_as_root", staticmethod(lambda: False))


# ---- config ---------------------------------------------------------------------------------------


def test_render_config_has_the_single_node_loopback_settings(tmp_path: Path) -> None:
    conf = _parse_yml(render_config(9299, tmp_path / "data", tmp_path / "logs"))
    assert conf["http.port"] == "9299"
    assert conf["transport.port"] == "9399"
    assert conf["network.host"] == '"127.0.0.1"'
    assert conf["discovery.type"] == '"single-node"'
    assert conf["cluster.name"] == '"sift-9299"'
    assert conf["xpack.security.enabled"] == "false"
    assert conf["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert conf["action.destructive_requires_name"] == "false"
    assert conf["xpack.ml.enabled"] == "false"
    assert conf["path.data"] == f'"{tmp_path / "data"}"'
    assert conf["path.logs"] == f'"{tmp_path / "logs"}"'


def test_render_config_quotes_odd_paths_and_accepts_extras(tmp_path: Path) -> None:
    odd = tmp_path / 'a "quoted": dir #1'
    conf = _parse_yml(render_config(9200, odd, odd, {"http.port": 9201, "node.attr.x": "y"}))
    assert conf["path.data"] == '"' + str(odd).replace('"', '\\"') + '"'
    assert conf["http.port"] == "9201"
    assert conf["node.attr.x"] == '"y"'


# ---- construction ---------------------------------------------------------------------------------


def test_constructor_does_no_io(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    es = LocalElasticsearch(port=9311, cache_dir=cache)
    assert es.url == "http://127.0.0.1:9311"
    assert es.transport_port == 9411
    assert not cache.exists()


@pytest.mark.parametrize("kwargs", [{"port": 0}, {"port": 65500}, {"heap": "lots"}, {"heap": "512 m"}])
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(EsNodeError):
        LocalElasticsearch(**kwargs)  # type: ignore[arg-type]


def test_layout_when_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _not_root(monkeypatch)
    es = LocalElasticsearch(port=9312, cache_dir=tmp_path)
    assert es.es_home == tmp_path / "elasticsearch-8.19.21"
    assert es.state_dir == tmp_path / "es-node-9312"
    assert es.config_dir == es.state_dir / "config"
    assert es.pid_file.parent == es.state_dir
    assert es.log_file == es.state_dir / "logs" / "sift-9312.log"


def test_root_relocates_a_private_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalElasticsearch, "_as_root", staticmethod(lambda: True))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    es = LocalElasticsearch(port=9313, cache_dir=private / "cache")
    assert es.base_dir == es_dist.ROOT_FALLBACK_BASE
    assert es.state_dir == es_dist.ROOT_FALLBACK_BASE / "es-node-9313"


def test_root_keeps_a_reachable_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalElasticsearch, "_as_root", staticmethod(lambda: True))
    monkeypatch.setattr(es_dist, "_traversable_by_others", lambda path: True)
    es = LocalElasticsearch(port=9314, cache_dir=tmp_path / "cache")
    assert es.base_dir == tmp_path / "cache"


def test_traversable_by_others(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    closed = open_dir / "closed"
    closed.mkdir()
    closed.chmod(0o700)
    # tmp_path's own parents may be private (pytest uses 0700), so only the negative case is certain
    assert not es_dist._traversable_by_others(closed / "below" / "x")
    assert es_dist._traversable_by_others(Path("/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only placement rule")
def test_root_refuses_a_state_dir_sift_es_cannot_reach(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    es = LocalElasticsearch(port=_free_port(), state_dir=private / "node")
    with pytest.raises(EsNodeError, match="sift-es"):
        es.start(timeout=5)
    assert not (private / "node").exists()


# ---- pid file and status --------------------------------------------------------------------------


def test_status_when_nothing_runs_on_a_free_port(tmp_path: Path) -> None:
    port = _free_port()
    es = LocalElasticsearch(port=port, state_dir=tmp_path / "node")
    assert es.status() == NodeStatus(running=False, pid=None, url=f"http://127.0.0.1:{port}", health=None)
    assert not (tmp_path / "node").exists()


def test_dead_pid_in_pid_file_is_not_running_and_is_cleaned(tmp_path: Path) -> None:
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    es.pid_file.write_text(f"{_dead_pid()}\n")
    status = es.status()
    assert not status.running
    assert status.pid is None
    assert not es.pid_file.exists()


def test_pid_of_an_unrelated_live_process_is_not_ours(tmp_path: Path) -> None:
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc to tell processes apart")
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    es.pid_file.write_text(str(os.getpid()))
    assert es.live_pid() is None
    assert not es.pid_file.exists()


def test_garbage_pid_file(tmp_path: Path) -> None:
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    es.pid_file.write_text("not a pid")
    assert es.live_pid() is None
    assert not es.pid_file.exists()


def test_stop_with_nothing_running_returns_false(tmp_path: Path) -> None:
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    es.pid_file.write_text(str(_dead_pid()))
    assert es.stop(timeout=1) is False
    assert not es.pid_file.exists()


def test_wipe_deletes_data_only(tmp_path: Path) -> None:
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    (es.data_dir / "nodes").mkdir(parents=True)
    es.config_dir.mkdir()
    es.wipe()
    assert not es.data_dir.exists()
    assert es.config_dir.exists()


def test_zombie_is_not_alive() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):
            if not es_node._pid_alive(proc.pid):
                break
            subprocess.run(["sleep", "0.01"], check=False)
        assert not es_node._pid_alive(proc.pid)  # exited but not yet reaped: a zombie
    finally:
        proc.wait()
    assert es_node._pid_alive(os.getpid())


def test_start_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        if port + es_node.TRANSPORT_PORT_OFFSET > 65535:
            pytest.skip("ephemeral port too high for a transport port")
        state = tmp_path / "node"
        if os.geteuid() == 0 and not es_dist._traversable_by_others(tmp_path):
            state = Path(es_node.tempfile.mkdtemp(prefix="sift-es-unit-", dir="/var/tmp"))
        try:
            es = LocalElasticsearch(port=port, state_dir=state)
            with pytest.raises(EsNodeError, match=f"port {port} .* in use"):
                es.start(timeout=5)
        finally:
            if state != tmp_path / "node":
                es_node.shutil.rmtree(state, ignore_errors=True)


def test_wait_ready_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    es = LocalElasticsearch(port=_free_port(), state_dir=tmp_path)
    es.logs_dir.mkdir()
    es.log_file.write_text(
        "[2026-01-01T00:00:00,000][INFO ][o.e.n.Node] starting\n"
        "[2026-01-01T00:00:01,000][ERROR][o.e.b.Elasticsearch] fatal exception while booting\n"
        "java.lang.IllegalArgumentException: unknown setting [bogus]\n"
        "\tat org.elasticsearch.Foo.bar(Foo.java:1)\n"
    )
    with pytest.raises(EsNodeError) as info:
        es.wait_ready(timeout=30)
    message = str(info.value)
    assert "exited while starting" in message
    assert message.index("likely cause") < message.index("--- ")
    assert "unknown setting [bogus]" in message


# ---- installation ---------------------------------------------------------------------------------


def _fake_distribution_zip(path: Path, version: str) -> Path:
    top = f"elasticsearch-{version}/"
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode, body in [
            ("bin/elasticsearch", 0o755, "#!/bin/sh\n"),
            ("bin/elasticsearch.bat", 0o644, "rem\n"),
            ("config/jvm.options", 0o660, "-XX:+UseG1GC\n"),
            ("config/elasticsearch.yml", 0o660, "# stock\n"),
            ("lib/x.jar", 0o644, "jar"),
        ]:
            info = zipfile.ZipInfo(top + name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, body)
    return path


def _fake_hunspell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "hunspell-src"
    src.mkdir()
    (src / "en_US.aff").write_text("SET UTF-8\n")
    (src / "en_US.dic").write_text("1\nrun/SG\n")
    monkeypatch.setattr(es_dist, "HUNSPELL_SOURCE", src)
    return src


def test_ensure_distribution_unpacks_with_modes_and_hunspell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _not_root(monkeypatch)
    _fake_hunspell(tmp_path, monkeypatch)
    zip_path = _fake_distribution_zip(tmp_path / "es.zip", "0.0.1")
    monkeypatch.setattr(LocalElasticsearch, "m2_zip", property(lambda self: zip_path))
    es = LocalElasticsearch(cache_dir=tmp_path / "cache", version="0.0.1")

    home = es.ensure_distribution()
    assert home == tmp_path / "cache" / "elasticsearch-0.0.1"
    assert os.access(home / "bin" / "elasticsearch", os.X_OK)
    assert (home / "config" / "hunspell" / "en_US" / "en_US.dic").read_text() == "1\nrun/SG\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".install.lock", "elasticsearch-0.0.1"]

    zip_path.unlink()  # idempotent: the second call must not need the zip
    assert es.ensure_distribution() == home


def test_missing_hunspell_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es_dist, "HUNSPELL_SOURCE", tmp_path / "none")
    with pytest.raises(EsNodeError, match="apt-get install -y hunspell-en-us"):
        LocalElasticsearch._install_hunspell(tmp_path / "config")


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalElasticsearch, "m2_zip", property(lambda self: tmp_path / "absent.zip"))
    monkeypatch.setattr(es_dist.shutil, "which", lambda name: None)
    with pytest.raises(EsNodeError, match="apt-get install -y maven openjdk-17-jdk-headless"):
        LocalElasticsearch(cache_dir=tmp_path)._fetch_zip()


def test_java_home_from_env_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jdk = tmp_path / "jdk"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("#!/bin/sh\n")
    (jdk / "bin" / "java").chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("ES_JAVA_HOME", str(jdk))
    assert LocalElasticsearch.java_home() == jdk

    monkeypatch.delenv("ES_JAVA_HOME")
    link_dir = tmp_path / "path"
    link_dir.mkdir()
    (link_dir / "java").symlink_to(jdk / "bin" / "java")
    monkeypatch.setenv("PATH", str(link_dir))
    assert LocalElasticsearch.java_home() == jdk.resolve()

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EsNodeError, match="openjdk-17-jdk-headless"):
        LocalElasticsearch.java_home()


def test_prepare_state_copies_config_and_writes_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _not_root(monkeypatch)
    _fake_hunspell(tmp_path, monkeypatch)
    monkeypatch.setattr(LocalElasticsearch, "java_home", staticmethod(lambda: Path("/opt/jdk")))
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text("-XX:+UseG1GC\n")
    (home / "config" / "elasticsearch.yml").write_text("# stock\n")
    es = LocalElasticsearch(port=9315, heap="256m", state_dir=tmp_path / "node")
    es.state_dir.mkdir()

    env = es._prepare_state(home)
    assert env == {
        "ES_JAVA_HOME": "/opt/jdk",
        "ES_PATH_CONF": str(es.config_dir),
        "ES_JAVA_OPTS": "-Xms256m -Xmx256m",
        "ES_TMPDIR": str(es.tmp_dir),
    }
    assert (es.config_dir / "jvm.options").is_file()
    assert (es.config_dir / "hunspell" / "en_US" / "en_US.aff").is_file()
    assert _parse_yml((es.config_dir / "elasticsearch.yml").read_text())["http.port"] == "9315"
    assert es.data_dir.is_dir() and es.logs_dir.is_dir() and es.tmp_dir.is_dir()
    assert not list(es.state_dir.glob(".config.*"))
