#!/usr/bin/env bash
# The whole test suite (pure functions, a real local Ray cluster, real Spark in local
# mode and on RayDP, real TensorFlow, the fault-injection cases). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
source ci/env.sh
exec .venv/bin/python -m pytest tests -p no:cacheprovider -ra --durations=15 "$@"
