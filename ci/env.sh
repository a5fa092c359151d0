# Environment for running raytfnode with Spark on this machine: sourced by the ci/ scripts.
export PYSPARK_PYTHON="$PWD/.venv/bin/python"
export PYSPARK_DRIVER_PYTHON="$PWD/.venv/bin/python"
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export TF_USE_LEGACY_KERAS=1
export RAY_DEDUP_LOGS=${RAY_DEDUP_LOGS:-1}
