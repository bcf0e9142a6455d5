#!/usr/bin/env bash
# Installs the InstantSearch page's libraries from npm (package.json: exact versions) and copies their UMD bundles
# into serving/static/vendor/, which Sift serves under /widget/vendor/: the page never loads a CDN.
#
#   scripts/vendor-js.sh [VENDOR_DIR]   # `make setup` runs it when package.json is newer than VENDOR_DIR/.installed
#
# No lock file is written (.npmrc: package-lock=false; one would record registry URLs): the bundles are
# self-contained builds, so the two exact versions pin everything the page loads. Peer dependencies (the Algolia
# API client) are left out: Sift's own search client replaces it. Without npm it says what to install and exits 0,
# leaving the marker unwritten so the next `make setup` tries again; the rest of Sift does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor="${1:-serving/static/vendor}"

if ! command -v npm >/dev/null 2>&1; then
  echo "note: npm is missing, so the InstantSearch page (/widget/search.html) has no libraries;" \
    "install Node.js and npm (apt-get install nodejs npm), then rerun make setup" >&2
  exit 0
fi

npm install --no-package-lock --no-save --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error
tmp="${vendor}.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
cp node_modules/instantsearch.js/dist/instantsearch.production.min.js "$tmp/"
cp node_modules/instantsearch.js/LICENSE "$tmp/instantsearch.js.LICENSE"
cp node_modules/search-insights/dist/search-insights.min.js "$tmp/"
cp node_modules/search-insights/LICENSE* "$tmp/search-insights.LICENSE" 2>/dev/null || true
node -e 'const p = require("./package.json").dependencies; const v = {};
  for (const n of Object.keys(p)) v[n] = require(`./node_modules/${n}/package.json`).version;
  for (const n of Object.keys(p)) if (v[n] !== p[n]) { console.error(`${n}: installed ${v[n]}, package.json pins ${p[n]}`); process.exit(1); }
  require("fs").writeFileSync(process.argv[1], JSON.stringify(v, null, 2) + "\n");' "$tmp/versions.json"
touch "$tmp/.installed"
rm -rf "$vendor"
mv "$tmp" "$vendor"
echo "InstantSearch libraries in $vendor: $(tr -d '\n ' <"$vendor/versions.json")"
