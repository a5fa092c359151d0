"""Stands in for TensorFlowOnSpark's ``tests/test.py``: its ``SparkTest`` base on local-mode Spark and a local Ray.

TensorFlowOnSpark's base needed a Spark standalone cluster (``MASTER``), its
worker count (``SPARK_WORKER_INSTANCES``) and the TFRecord Hadoop jar
(``SPARK_CLASSPATH``). Here every test class shares one local-mode
SparkContext, and ``num_workers`` is the number of CPUs of the local Ray
cluster that run_original.py starts: like executors of one core each, a
TF cluster of ``num_workers`` nodes fits and ``num_workers + 1`` barrier
runs do not.
"""
import os
import unittest

NUM_WORKERS = int(os.environ.get("RAYTFNODE_ORIGINAL_WORKERS", "2"))


class SparkTest(unittest.TestCase):
    """Base class for unittests using Spark: local-mode Spark, shared by every test class of the run."""

    num_workers = NUM_WORKERS

    @classmethod
    def setUpClass(cls):
        from pyspark import SparkConf, SparkContext
        from pyspark.sql import SparkSession

        conf = (SparkConf().setMaster("local[{}]".format(NUM_WORKERS)).setAppName("tensorflowonspark-tests")
                .set("spark.ui.enabled", "false").set("spark.sql.shuffle.partitions", "4"))
        cls.sc = SparkContext.getOrCreate(conf)
        cls.sc.setLogLevel("ERROR")
        cls.spark = SparkSession.builder.getOrCreate()
        cls.num_workers = NUM_WORKERS

    @classmethod
    def tearDownClass(cls):
        pass    # one SparkContext for the whole run; run_original.py stops it at the end

    def setUp(self):
        print("\n===========================================================")
        print(self.id())
        print("===========================================================\n")
