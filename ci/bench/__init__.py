"""raytfnode benchmark: feed throughput against the limits of its sources, training, start-up, memory,
scaling, and the peers a user would pick instead, measured in one run on the same generated data.

One module per measurement, each with ``measure(bench) -> dict`` (or ``measure(tiny) -> dict`` for a
module that needs nothing from the run), its figures stored under its name in the JSON result:

- ``limits``: what each source and the object store move with no feeding;
- ``sources``: feed throughput into ``DataFeed`` from an RDD, a DataFrame and a Ray Dataset;
- ``training``: a Keras model on two nodes, fed against an in-memory ``tf.data`` pipeline;
- ``startup``: ``run()`` and ``shutdown()`` of a 2-node cluster;
- ``memory``: object-store peak and consumer RSS while feeding 10x the queues' bound;
- ``scaling``: feed rate and driver CPU from 60,000 to 600,000 rows and 4 to 400 partitions, 1-4 nodes;
- ``peers`` (``--peers``): TensorFlowOnSpark 2.2.5, Ray Train, spark-tensorflow-distributor and
  Spark's ``predict_batch_udf`` on the same rows, model and SavedModel;
- any other module of this package with a ``measure`` (``pipeline``, ``tfrecords``).

Usage::

    python ci/bench                       # full run (RayDP Spark), < 10 minutes
    python ci/bench --peers               # and the peers, still < 10 minutes
    python ci/bench --only training       # one measurement alone (comma list)
    python ci/bench --tiny --spark local  # small sizes (the test suite runs this)
    python ci/bench/table.py ci/results/bench.json   # the README's Speed table, Markdown

Writes JSON (default ``ci/results/bench.json``, git-ignored) and prints the Markdown table.
"""
