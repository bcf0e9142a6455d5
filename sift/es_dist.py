"""The Elasticsearch distribution a local node runs from: fetched from Maven Central once, unpacked, with hunspell.

The install half of `sift.es_node.LocalElasticsearch` (which adds the per-port node process on top): where the
cache lives (relocated to ``/var/tmp/sift-es`` as root when ``sift-es`` could not reach it), the Maven fetch, the
unpacking with file modes restored, the hunspell dictionary the index mapping needs, the unprivileged user a
root caller runs the node as, and the JDK. Only the standard library is used (see `sift.es_node`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

DEFAULT_VERSION = "8.19.21"
ES_USER = "sift-es"
ROOT_FALLBACK_BASE = Path("/var/tmp/sift-es")
HUNSPELL_SOURCE = Path("/usr/share/hunspell")
HUNSPELL_LOCALE = "en_US"

_INSTALL_JAVA = "install maven and a JDK 17: apt-get install -y maven openjdk-17-jdk-headless"


class EsNodeError(RuntimeError):
    """Raised when the local node cannot be installed, started or stopped; the message says what to do."""


def default_cache_dir() -> Path:
    """Same rule as `search.settings` (kept here so this module needs no third-party import)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sift"


def _traversable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (every existing ancestor has o+x).

    Conservative: group permissions are ignored, since ``sift-es`` is in no one's group.
    """
    path = path.absolute()
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue  # will be created by us, 0755
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
    return True


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """chown -R, touching only entries that differ (cheap on an already-owned tree)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(name, uid, gid)


def _mkdirs(path: Path) -> None:
    """mkdir -p; as root, new directories get 0755 whatever the umask, so ``sift-es`` can traverse them."""
    missing = [d for d in [path, *path.parents] if not d.exists()]
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for directory in missing:
            directory.chmod(0o755)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock, so parallel test workers don't unpack or start the same thing twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fh = path.open("a")
    except PermissionError:  # a shared dir someone else owns: flock works on a read-only descriptor too
        fh = path.open("r")
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class EsDistribution:
    """One Elasticsearch version unpacked under a cache dir (``<base>/elasticsearch-<version>``).

    Construction does no I/O; paths are resolved on first use.
    """

    def __init__(self, version: str = DEFAULT_VERSION, cache_dir: Path | None = None) -> None:
        self.version = version
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    @cached_property
    def base_dir(self) -> Path:
        """Where the distribution and default state dirs go (relocated for ``sift-es`` when root)."""
        base = (self._cache_dir or default_cache_dir()).absolute()
        if self._as_root() and not _traversable_by_others(base):
            return ROOT_FALLBACK_BASE
        return base

    @cached_property
    def es_home(self) -> Path:
        return self.base_dir / f"elasticsearch-{self.version}"

    @property
    def artifact(self) -> str:
        return f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.version}:zip"

    @property
    def m2_zip(self) -> Path:
        return (
            Path.home()
            / ".m2/repository/org/elasticsearch/distribution/integ-test-zip/elasticsearch"
            / self.version
            / f"elasticsearch-{self.version}.zip"
        )

    # ---- installation ------------------------------------------------------------------------------

    def ensure_distribution(self) -> Path:
        """Fetch (Maven), unpack and add the hunspell dictionary once; returns the ES home. Idempotent."""
        if not self._as_root() and self._installed():
            return self.es_home  # also lets a non-root user share an install it cannot write to
        _mkdirs(self.base_dir)
        self._check_base_owner()
        with _file_lock(self.base_dir / ".install.lock"):
            if not (self.es_home / "bin" / "elasticsearch").is_file():
                self._unpack(self._fetch_zip())
            self._install_hunspell(self.es_home / "config")
            if self._as_root():
                uid, gid = self._ensure_es_user()
                _chown_tree(self.es_home, uid, gid)  # cheap when already owned; covers the hunspell copy
        return self.es_home

    def _installed(self) -> bool:
        hunspell = self.es_home / "config" / "hunspell" / HUNSPELL_LOCALE / f"{HUNSPELL_LOCALE}.dic"
        return (self.es_home / "bin" / "elasticsearch").is_file() and hunspell.is_file()

    def _check_base_owner(self) -> None:
        """/var/tmp is world-writable: refuse a fallback dir planted by another user."""
        if self.base_dir != ROOT_FALLBACK_BASE:
            return
        owner = self.base_dir.stat().st_uid
        allowed = {0}
        with contextlib.suppress(KeyError):
            allowed.add(pwd.getpwnam(ES_USER).pw_uid)
        if owner not in allowed:
            raise EsNodeError(f"{self.base_dir} is owned by uid {owner}, not root: remove it and retry")

    def _fetch_zip(self) -> Path:
        if self.m2_zip.is_file():
            return self.m2_zip
        mvn = shutil.which("mvn")
        if mvn is None:
            raise EsNodeError(f"mvn not found; {_INSTALL_JAVA}")
        cmd = [mvn, "-q", "-B", "dependency:get", f"-Dartifact={self.artifact}", "-Dtransitive=false"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EsNodeError(f"`{' '.join(cmd)}` timed out after 900 s") from exc
        if proc.returncode != 0 or not self.m2_zip.is_file():
            out = (proc.stdout + proc.stderr)[-3000:]
            raise EsNodeError(
                f"could not fetch {self.artifact} with Maven (exit {proc.returncode}; expected {self.m2_zip}):\n{out}"
            )
        return self.m2_zip

    def _unpack(self, zip_path: Path) -> None:
        """Unzip into a temp dir next to the target, restore file modes, then rename into place."""
        top = f"elasticsearch-{self.version}/"
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.es_home.name}.", dir=self.base_dir))
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for info in zf.infolist():
                    if not info.filename.startswith(top):
                        raise EsNodeError(f"{zip_path}: unexpected entry {info.filename!r}; delete it and retry")
                    target = Path(zf.extract(info, tmp))
                    mode = (info.external_attr >> 16) & 0o7777
                    if mode and not info.is_dir():
                        target.chmod(mode)
            for directory, _dirs, _files in os.walk(tmp):
                os.chmod(directory, 0o755)
            bin_dir = tmp / top / "bin"
            for script in bin_dir.iterdir():
                if not script.suffix:  # zips without unix modes: bin scripts must still run
                    script.chmod(script.stat().st_mode | 0o755)
            if self._as_root():
                uid, gid = self._ensure_es_user()
                _chown_tree(tmp / top, uid, gid)
            try:
                os.rename(tmp / top, self.es_home)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        except zipfile.BadZipFile as exc:
            raise EsNodeError(f"{zip_path} is corrupt ({exc}); delete it and retry") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _install_hunspell(config_dir: Path) -> None:
        """The index mapping uses the hunspell filter (the zip has no stemmer), so the dictionary is required."""
        dest = config_dir / "hunspell" / HUNSPELL_LOCALE
        names = [f"{HUNSPELL_LOCALE}.aff", f"{HUNSPELL_LOCALE}.dic"]
        if all((dest / n).is_file() for n in names):
            return
        missing = [str(HUNSPELL_SOURCE / n) for n in names if not (HUNSPELL_SOURCE / n).is_file()]
        if missing:
            raise EsNodeError(
                f"hunspell dictionary not found ({', '.join(missing)}); install it: apt-get install -y hunspell-en-us"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(HUNSPELL_SOURCE / name, dest / name)

    @staticmethod
    def _ensure_es_user() -> tuple[int, int]:
        """The unprivileged user the node runs as when we are root (created once)."""
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(ES_USER)
            return entry.pw_uid, entry.pw_gid
        useradd = shutil.which("useradd")
        if useradd is None:
            raise EsNodeError(
                f"running as root needs a user {ES_USER!r} and `useradd` is missing; "
                "create the user by hand or run as a non-root user"
            )
        proc = subprocess.run([useradd, "-r", "-m", ES_USER], capture_output=True, text=True, check=False)
        if proc.returncode not in (0, 9):  # 9: already exists (raced)
            raise EsNodeError(f"useradd -r -m {ES_USER} failed: {proc.stderr.strip()}")
        entry = pwd.getpwnam(ES_USER)
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def java_home() -> Path:
        """$ES_JAVA_HOME, $JAVA_HOME, or the JDK behind `java` on PATH (this zip bundles no JDK)."""
        for var in ("ES_JAVA_HOME", "JAVA_HOME"):
            value = os.environ.get(var)
            if value and (Path(value) / "bin" / "java").is_file():
                return Path(value)
        java = shutil.which("java")
        if java is None:
            raise EsNodeError(f"java not found (set ES_JAVA_HOME or {_INSTALL_JAVA})")
        real = Path(java).resolve()
        if real.parent.name != "bin":
            raise EsNodeError(f"cannot derive a JDK home from {real}; set ES_JAVA_HOME")
        return real.parent.parent
