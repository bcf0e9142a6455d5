#!/usr/bin/env bash
# Installs the Debian packages a Sift target needs, only those that are missing.
#
#   scripts/system-packages.sh demo   # what `make demo` uses: a Python that can make a venv
#   scripts/system-packages.sh test   # + JDK 17, Maven (the ES node), hunspell-en-us (ES stemming),
#                                     #   chromium + chromium-driver (the widget's browser test),
#                                     #   nodejs + npm (the InstantSearch page's libraries)
#
# As root it runs apt-get; otherwise through `sudo -n` when that needs no password. If neither is possible it
# stops at once with one line naming the packages, so nothing half-installs and no test silently skips.
set -euo pipefail

profile="${1:-test}"
PYTHON="${PYTHON:-python3}"
need=()

# Debian's system Python needs python3-venv for `python3 -m venv` (ensurepip); other Pythons carry it.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo 3)
  need+=("python${ver}-venv")
fi

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

case "$profile" in
  demo) ;;
  test)
    major=$(command -v java >/dev/null 2>&1 && java_major || echo 0)
    [ "${major:-0}" -ge 17 ] 2>/dev/null || need+=(openjdk-17-jdk-headless)
    command -v mvn >/dev/null 2>&1 || need+=(maven)
    [ -f /usr/share/hunspell/en_US.dic ] && [ -f /usr/share/hunspell/en_US.aff ] || need+=(hunspell-en-us)
    [ -x "${SIFT_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
    [ -x "${SIFT_CHROMEDRIVER:-/usr/bin/chromedriver}" ] || need+=(chromium-driver)
    command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # the InstantSearch page's libraries (vendor-js.sh)
    ;;
  *)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac

[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  echo "error: missing system packages; install them as root, then rerun: apt-get install -y ${need[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing system packages and no apt-get here; install the equivalents of: ${need[*]}" >&2
  exit 1
fi

echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q "${need[@]}"
