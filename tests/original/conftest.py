"""TensorFlowOnSpark's own test files are run by tests/test_tfos_original.py in a process of their own."""
collect_ignore_glob = ["test_*.py", "run_original.py", "spark_test_on_ray.py"]
