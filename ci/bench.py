"""``python ci/bench.py`` still runs the benchmark: the package ``ci/bench/`` (``python ci/bench``)."""
import os
import runpy

if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"), run_name="__main__")
