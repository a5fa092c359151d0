#!/usr/bin/env bash
# The main job: Spark-fed distributed training and inference of handwritten digits
# on an embedded local Ray cluster with RayDP Spark (examples/spark_digits.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
source ci/env.sh
exec .venv/bin/python examples/spark_digits.py "$@"
