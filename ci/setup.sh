#!/usr/bin/env bash
# Creates .venv (Python 3.11) with raytfnode and its pinned dependencies, once.
# Re-running is cheap: the install is redone only when pyproject.toml or
# ci/constraints.txt change. Needs Python 3.11 and Java 17 (for Spark) on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "raytfnode needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY
if ! command -v java >/dev/null 2>&1; then
  echo "warning: java not found; Spark (pyspark/RayDP) needs Java 17: apt-get install openjdk-17-jre-headless" >&2
fi
stamp=.venv/.raytfnode-installed
want=$(cat pyproject.toml ci/constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c ci/constraints.txt -e ".[spark,tensorboard,examples,test,docs]"
echo "$want" > "$stamp"
