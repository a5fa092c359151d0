# A TensorFlowOnSpark program, as written for TensorFlowOnSpark (the structure of its
# examples/mnist/keras/mnist_spark.py), running on raytfnode. Porting it took one change: the import line
# marked "the port" below. Spark runs in local mode unless spark-submit says otherwise.
#
#   python examples/original_style.py                       # writes digits.csv, trains 2 nodes
#   spark-submit examples/original_style.py --images_labels digits.csv --cluster_size 2
#
# The input is a CSV text file of "label,pixel0,...,pixel63" lines (scikit-learn's 8x8 digits;
# written on first use when --images_labels does not exist).

# from tensorflowonspark import TFCluster, TFNode       # the original import
from raytfnode import TFCluster, TFNode                 # the port: the only line that changed


def main_fun(args, ctx):
  import numpy as np
  import tensorflow as tf

  strategy = tf.distribute.MultiWorkerMirroredStrategy()

  def build_and_compile_cnn_model():
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, 3, padding='same', activation='relu', input_shape=(8, 8, 1)),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation='relu'),
        tf.keras.layers.Dense(10, activation='softmax')
    ])
    model.compile(
        loss=tf.keras.losses.sparse_categorical_crossentropy,
        optimizer=tf.keras.optimizers.Adam(learning_rate=args.learning_rate),
        metrics=['accuracy'])
    return model

  tf_feed = TFNode.DataFeed(ctx.mgr, False)

  def rdd_generator():
    while not tf_feed.should_stop():
      batch = tf_feed.next_batch(1)
      if len(batch) > 0:
        example = batch[0]
        image = np.array(example[0]).astype(np.float32) / 16.0
        image = np.reshape(image, (8, 8, 1))
        label = np.array(example[1]).astype(np.float32)
        label = np.reshape(label, (1,))
        yield (image, label)
      else:
        return

  ds = tf.data.Dataset.from_generator(rdd_generator, (tf.float32, tf.float32), (tf.TensorShape([8, 8, 1]), tf.TensorShape([1])))
  ds = ds.batch(args.batch_size)

  with strategy.scope():
    multi_worker_model = build_and_compile_cnn_model()

  # Note: MultiWorkerMirroredStrategy (CollectiveAllReduceStrategy) is synchronous,
  # so we need to ensure that all workers complete training before any of them run out of data from the RDD.
  # And given that Spark RDD partitions (and partition sizes) can be non-evenly divisible by num_workers,
  # we'll just stop training at 90% of the total expected number of steps.
  steps_per_epoch = args.num_records / args.batch_size
  steps_per_epoch_per_worker = steps_per_epoch / ctx.num_workers
  max_steps_per_worker = int(steps_per_epoch_per_worker * 0.9)

  history = multi_worker_model.fit(x=ds, epochs=args.epochs, steps_per_epoch=max_steps_per_worker, verbose=0)
  print("{}:{} trained {} epochs x {} steps: {}".format(
      ctx.job_name, ctx.task_index, args.epochs, max_steps_per_worker,
      {k: round(v[-1], 4) for k, v in history.history.items()}), flush=True)

  # non-chief nodes save to a dummy location (saving is collective under MultiWorkerMirroredStrategy)
  import os
  import tempfile
  export_dir = ctx.absolute_path(args.export_dir)
  multi_worker_model.save(export_dir if ctx.job_name == 'chief' else os.path.join(tempfile.mkdtemp(), 'dummy'))

  # terminating feed tells spark to skip processing further partitions
  tf_feed.terminate()


if __name__ == '__main__':
  import argparse
  import os
  import sys
  from pyspark.context import SparkContext
  from pyspark.conf import SparkConf

  # (not TensorFlowOnSpark-specific: lets a bare `python original_style.py` find Spark and itself)
  os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
  os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
  os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  conf = SparkConf().setAppName("digits_keras").setIfMissing("spark.master", "local[2]") \
                    .setIfMissing("spark.ui.showConsoleProgress", "false")
  sc = SparkContext(conf=conf)
  sc.setLogLevel("ERROR")
  executors = sc._conf.get("spark.executor.instances")
  num_executors = int(executors) if executors is not None else 2

  parser = argparse.ArgumentParser()
  parser.add_argument("--batch_size", help="number of records per batch", type=int, default=32)
  parser.add_argument("--cluster_size", help="number of nodes in the cluster", type=int, default=num_executors)
  parser.add_argument("--epochs", help="number of epochs", type=int, default=5)
  parser.add_argument("--learning_rate", help="learning rate", type=float, default=0.003)
  parser.add_argument("--images_labels", help="path to digits images and labels in CSV format", default="digits.csv")
  parser.add_argument("--export_dir", help="path to export saved_model", default="digits_export")
  parser.add_argument("--tensorboard", help="launch tensorboard process", action="store_true")

  args = parser.parse_args()
  print("args:", args)

  if not os.path.exists(args.images_labels):
    from sklearn.datasets import load_digits
    digits = load_digits()
    with open(args.images_labels, "w") as f:
      for image, label in zip(digits.data.astype(int), digits.target):
        f.write(",".join(str(v) for v in [label] + list(image)) + "\n")

  # create RDD of input data
  def parse(ln):
    vec = [int(x) for x in ln.split(',')]
    return (vec[1:], vec[0])

  images_labels = sc.textFile(args.images_labels).map(parse)
  args.num_records = images_labels.count()

  cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=0, tensorboard=args.tensorboard, input_mode=TFCluster.InputMode.SPARK, master_node='chief')
  cluster.train(images_labels, args.epochs)
  cluster.shutdown()
  print("SUMMARY nodes={} records={} epochs={} export_dir={}".format(
      args.cluster_size, args.num_records, args.epochs, os.path.abspath(args.export_dir)))
  sc.stop()
