#!/usr/bin/env bash
# Label Studio for the tests: its own venv (its pins conflict with prefect's) and a pre-migrated data dir.
#
#   LABEL_STUDIO_VENV          venv to create/use       (default <repo>/.venv-labelstudio)
#   LABEL_STUDIO_TEMPLATE_DIR  migrated data dir to build (default <repo>/.labelstudio-template)
#
# Both steps are skipped when already done, so running it again is cheap.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LABEL_STUDIO_VENV:-$repo/.venv-labelstudio}"
template="${LABEL_STUDIO_TEMPLATE_DIR:-$repo/.labelstudio-template}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

# The test fixture logs in with these (tests/labelstudio_support.py holds the same values).
export LABEL_STUDIO_USERNAME="${LABEL_STUDIO_USERNAME:-reviewer@intelrouter.test}"
export LABEL_STUDIO_PASSWORD="${LABEL_STUDIO_PASSWORD:-intelrouter-review}"
export LABEL_STUDIO_USER_TOKEN="${LABEL_STUDIO_USER_TOKEN:-1ab5e7d9c3f24b6a8e0d2c4f6a8b0c2e4d6f8a0b}"
# Offline: no version check, no analytics, no Sentry.
export LABEL_STUDIO_LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN=

if [ ! -x "$venv/bin/label-studio" ]; then
  echo "labelstudio: creating $venv (about 2.5 min)"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "label-studio==1.23.2"
fi
# (not `label-studio --version`: it migrates the default data dir first)
version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true)"
[ "$version" = "1.23.2" ] || {
  echo "labelstudio: $venv does not hold label-studio 1.23.2; remove it and re-run" >&2
  exit 1
}

if [ -f "$template/.intelrouter-ready" ]; then
  echo "labelstudio: template $template already built"
  exit 0
fi
# Build next to the target and move it in place, so a half-built dir is never taken for a ready one.
build="$(mktemp -d "${template%/}.build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
echo "labelstudio: migrating a fresh data dir (40-60 s)"
LABEL_STUDIO_BASE_DATA_DIR="$build" "$venv/bin/label-studio" init --quiet --enable-legacy-api-token \
  --data-dir "$build" >"$build/init.log" 2>&1 || { cat "$build/init.log" >&2; exit 1; }
touch "$build/.intelrouter-ready"
rm -rf "$template"
mv "$build" "$template"
trap - EXIT
echo "labelstudio: template ready at $template"
