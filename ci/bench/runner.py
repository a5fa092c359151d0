"""Runs the chosen measurements in one Ray (and Spark) session, writes the JSON, prints the table."""
import argparse
import datetime
import importlib
import inspect
import json
import logging
import os
import pkgutil
import sys
import time
import traceback

CI = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(CI)

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", os.environ["PYSPARK_PYTHON"])
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# Ray workers, RayDP executors and Spark's Python workers import the map_funs and the data
# generators from this package: they inherit this PYTHONPATH from the processes started here
os.environ["PYTHONPATH"] = os.pathsep.join([CI] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                   if p and p != CI])
if os.path.isdir(os.path.join(REPO, "raytfnode")):
    # the raytfnode of this checkout is measured (in the driver, Ray workers and Spark workers), not
    # whichever one is installed
    sys.path.insert(0, REPO)
    os.environ["PYTHONPATH"] = os.pathsep.join([CI, REPO] + os.environ["PYTHONPATH"].split(os.pathsep)[1:])

import bench  # noqa: E402
from bench import table  # noqa: E402
from bench.common import SOURCES, machine_info  # noqa: E402
from bench.context import LOCAL_MASTER, SIZES, Bench  # noqa: E402
from bench.targets import evaluate  # noqa: E402

log = logging.getLogger("bench")

ORDER = ("limits", "sources", "training", "startup", "memory", "scaling", "restart", "pipeline", "tfrecords", "peers")
OPT_IN = ("peers", "multinode")   # only when asked for (--peers, or --only NAME): own clusters


def discover():
    """{name: module} of every module of the package with a ``measure``, in run order."""
    found = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module("bench." + info.name)
        if callable(getattr(module, "measure", None)):
            found[info.name] = module
    known = [name for name in ORDER if name in found]
    others = sorted(set(found) - set(ORDER))
    order = [n for n in known if n != "peers"] + others + [n for n in known if n == "peers"]
    return {name: found[name] for name in order}


def call_measure(module, run):
    """``measure(tiny)`` for a module that takes only the size, ``measure(bench)`` for the others."""
    params = list(inspect.signature(module.measure).parameters)
    if params and params[0] == "tiny":
        return module.measure(tiny=run.tiny)
    return module.measure(run)


def parse(argv, names):
    parser = argparse.ArgumentParser(prog="python ci/bench", description=bench.__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (for the test suite)")
    parser.add_argument("--only", default=None, help="comma list of measurements to run alone: " + ",".join(names))
    parser.add_argument("--peers", action="store_true", help="measure the peers too (TensorFlowOnSpark, Ray Train, "
                        "spark-tensorflow-distributor, predict_batch_udf)")
    parser.add_argument("--spark", choices=("raydp", "local"), default="raydp")
    parser.add_argument("--out", default=os.path.join(CI, "results", "bench.json"))
    parser.add_argument("--repeat", type=int, default=0, help="repetitions per figure (best is kept)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")
    parser.add_argument("--node-cpus", type=float, default=0.5, help="num_cpus of read-only TF nodes")
    parser.add_argument("--executors", type=int, default=1,
                        help="RayDP executors (default 1, with all the cores: Spark's coalesce and cache locality "
                             "work per host, so two executors on one machine read about 40%% of a coalesced "
                             "task's cached partitions from each other)")
    parser.add_argument("--executor-cores", type=int, default=2, help="cores of each RayDP executor")
    parser.add_argument("--executor-memory", default="4g",
                        help="memory of each RayDP executor (local mode: the driver's)")
    parser.add_argument("--train-sources", default=None,
                        help="comma list of sources feeding the training run (default raydata,dataframe,rdd; "
                             "raydata with --tiny)")
    parser.add_argument("--memory-source", choices=SOURCES, default="dataframe")
    parser.add_argument("--scaling-source", choices=SOURCES, default="dataframe")
    parser.add_argument("--print", dest="print_json", metavar="JSON", default=None,
                        help="print the table of an earlier run's JSON file and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.train_sources is None:
        args.train_sources = "raydata" if args.tiny else "raydata,dataframe,rdd"
    if args.only:
        chosen = [n for n in args.only.split(",") if n]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            parser.error("unknown measurements {}; there are {}".format(unknown, ", ".join(names)))
        args.measurements = [n for n in names if n in chosen]
    else:
        args.measurements = [n for n in names if n not in OPT_IN or (n == "peers" and args.peers)]
    return args


def main(argv=None):
    modules = discover()
    args = parse(argv, list(modules))
    if args.print_json:
        with open(args.print_json) as f:
            print(table.markdown(json.load(f)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("raytfnode").setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    run = Bench(args)
    run.measurements = args.measurements
    results = run.results
    wall = time.monotonic()
    results.update({"started_at": datetime.datetime.now().isoformat(timespec="seconds"),
                    "spark": args.spark, "size": "tiny" if args.tiny else "full", "measurements": args.measurements,
                    "spark_layout": ({"executors": args.executors, "executor_cores": args.executor_cores,
                                      "executor_memory": args.executor_memory} if args.spark == "raydp"
                                     else {"master": LOCAL_MASTER, "driver_memory": args.executor_memory}),
                    "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in run.size.items()},
                    "note": "shared 2-core machine; numbers are noisy", "errors": {}, "measurement_seconds": {}})
    failed = []
    try:
        run.start_ray()
        results["machine"] = machine_info()
        results["chunk_bytes_default"] = run.chunk_bytes
        for name in args.measurements:
            log.info("-- %s", name)
            started = time.monotonic()
            try:
                results[name] = call_measure(modules[name], run)
            except Exception as exc:  # noqa: BLE001  (recorded; the run goes on and exits 1)
                log.exception("measurement %s failed", name)
                results["errors"][name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                failed.append(name)
            results["measurement_seconds"][name] = time.monotonic() - started
    finally:
        results["total_seconds"] = time.monotonic() - wall
        results.setdefault("machine", {})["loadavg_at_end"] = list(os.getloadavg())
        try:
            results["targets"] = evaluate(results, run.chunk_bytes or 0)
        except Exception:  # noqa: BLE001
            log.exception("evaluating targets failed")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, default=str)
        try:
            run.stop()
        except Exception:  # noqa: BLE001
            log.exception("stopping Spark/Ray failed")
    print(table.markdown(results))
    print("\nJSON written to {}".format(args.out))
    if failed:
        print("FAILED measurements: {}".format(", ".join(failed)))
        return 1
    return 0


__all__ = ["main", "SIZES"]
