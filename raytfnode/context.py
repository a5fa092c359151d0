"""TFNodeContext: what ``map_fun(args, ctx)`` learns about its node."""
from . import paths


def count_workers(cluster_spec):
    """The number of training nodes in ``cluster_spec``: its ``chief``, ``master`` and ``worker`` tasks."""
    return sum(len(cluster_spec.get(job, ())) for job in ("chief", "master", "worker"))


class TFNodeContext:
    """Metadata of one TF node, passed to ``map_fun(args, ctx)``.

    Attributes:
      :executor_id: the node's position in the cluster template (alias ``worker_num``).
      :job_name: the node's role: ``'ps'``, ``'chief'``/``'master'``, ``'evaluator'`` or ``'worker'``.
      :task_index: the node's index within its role.
      :cluster_spec: dict ``{job_name: ['host:port', ...]}`` of the whole cluster.
      :num_workers: number of nodes that train: the ``chief``, ``master`` and ``worker`` entries of
        ``cluster_spec`` (given explicitly where there is no cluster spec, as in ``TFParallel``).
      :defaultFS: the default filesystem (``fs.defaultFS`` of the Spark context, else ``'file://'``).
      :working_dir: directory for relative ``file://`` paths.
      :mgr: the node's ``TFManager`` (its queues and shared state).
      :tmp_socket: the socket holding the node's reserved port until ``release_port()``.
      :gpu_ids: GPU ids Ray assigned to the node (also in ``CUDA_VISIBLE_DEVICES``).
      :resources: the Ray resources assigned to the node's actor.
      :log_dir: TensorBoard log directory of the cluster, or ``None``.
      :attempt: how many times the cluster was restarted before this run of ``map_fun``
        (``0`` on the first run; see ``TFCluster.run(max_failures=...)``).
      :checkpoint_dir: a directory that stays the same across attempts, for the model's
        checkpoints (``tf_keras.callbacks.BackupAndRestore(ctx.checkpoint_dir)``).
      :resume_epoch: on a restart, the epoch the feed starts at when it is known when
        ``map_fun`` starts (from a ``BackupAndRestore`` backup in ``checkpoint_dir``), else ``None``.
    """

    def __init__(self, executor_id=0, job_name="", task_index=0, cluster_spec=None, defaultFS="file://",
                 working_dir=".", mgr=None, tmp_socket=None, num_workers=None, gpu_ids=(), resources=None,
                 log_dir=None, attempt=0, checkpoint_dir=None, resume_epoch=None):
        self.executor_id = executor_id
        self.worker_num = executor_id
        self.job_name = job_name
        self.task_index = task_index
        self.cluster_spec = cluster_spec or {}
        self.num_workers = num_workers if num_workers is not None else count_workers(self.cluster_spec)
        self.defaultFS = defaultFS
        self.working_dir = working_dir
        self.mgr = mgr
        self.tmp_socket = tmp_socket
        self.gpu_ids = list(gpu_ids)
        self.resources = dict(resources or {})
        self.log_dir = log_dir
        self.attempt = attempt
        self.checkpoint_dir = checkpoint_dir
        self.resume_epoch = resume_epoch

    def __repr__(self):
        return "TFNodeContext({}:{}, executor_id={})".format(self.job_name, self.task_index, self.executor_id)

    def absolute_path(self, path):
        """Convenience function to access ``TFNode.hdfs_path`` directly from this object instance."""
        return paths.absolute_path(self.defaultFS, self.working_dir, path)

    def get_data_feed(self, train_mode=True, qname_in="input", qname_out="output", input_mapping=None):
        """Convenience function to access ``TFNode.DataFeed`` directly from this object instance."""
        from .datafeed import DataFeed
        return DataFeed(self.mgr, train_mode, qname_in, qname_out, input_mapping)

    def resume_feed(self, epoch):
        """Tells the driver that this attempt resumes training at ``epoch`` (0-based).

        For a ``map_fun`` that restores its own checkpoint (``tf.train.CheckpointManager``)
        after a restart: the feed then delivers epochs ``epoch`` to ``num_epochs - 1``
        of the running ``train()``, each from its start. Call it before reading the
        feed; the call of the first fed node (chief, master or ``worker:0``) counts.
        A Keras program with ``BackupAndRestore(ctx.checkpoint_dir)`` needs no call.
        """
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            from .errors import BadInputError
            raise BadInputError("resume_feed(epoch) needs an epoch number >= 0, got {!r}".format(epoch))
        self.resume_epoch = epoch
        self.mgr.set("resume_epoch", epoch)

    def release_port(self):
        """Convenience function to access ``TFNode.release_port`` directly from this object instance."""
        if self.tmp_socket is not None:
            self.tmp_socket.close()
            self.tmp_socket = None

    def start_cluster_server(self, num_gpus=1, rdma=False):
        """Convenience function to access ``TFNode.start_cluster_server`` directly from this object instance."""
        from . import TFNode
        return TFNode.start_cluster_server(self, num_gpus, rdma)

    def export_saved_model(self, sess, export_dir, tag_set, signatures):
        """Convenience function to access ``TFNode.export_saved_model`` directly from this object instance."""
        from . import TFNode
        return TFNode.export_saved_model(sess, export_dir, tag_set, signatures)
