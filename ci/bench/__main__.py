"""The benchmark's runner: ``python ci/bench`` (or ``python -m bench`` from ``ci/``); see ``bench/__init__.py``."""
import os
import sys

CI = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(CI, "bench")
# run as a directory, Python put ci/bench itself first on the path: the package's modules are
# imported as bench.*, never as top-level modules
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
if CI not in sys.path:
    sys.path.insert(0, CI)

from bench.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
