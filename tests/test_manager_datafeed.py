"""TFManager and DataFeed on a real local Ray cluster: TensorFlowOnSpark's unit-test flow and the queue API."""
import queue
import sys
import warnings

import numpy as np
import pytest
import ray
import ray.cloudpickle

from raytfnode import TFManager, TFNode
from raytfnode.errors import BadInputError

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def mgr(ray_cluster):
    manager = TFManager.start(b"x", ["input", "output", "error"])
    yield manager
    manager.shutdown()


def _fill(manager, values, end=True, qname="input"):
    q = manager.get_queue(qname)
    for value in values:
        q.put(value)
    if end:
        q.put(None)  # end-of-feed marker


def test_tensorflowonspark_datafeed_flow_batches_sum_and_stop(mgr):
    """The flow of TensorFlowOnSpark's own test_datafeed."""
    _fill(mgr, range(10))
    feed = TFNode.DataFeed(mgr)

    assert not feed.should_stop()
    batch = feed.next_batch(2)
    assert len(batch) == 2 and sum(batch) == 1

    assert not feed.should_stop()
    batch = feed.next_batch(4)
    assert len(batch) == 4 and sum(batch) == 14

    assert not feed.should_stop()
    batch = feed.next_batch(10)
    assert len(batch) == 4 and sum(batch) == 30

    assert feed.should_stop()
    assert feed.done_feeding


def test_tfmanager_module_start_accepts_the_documented_arguments(ray_cluster):
    manager = TFManager.start("abc".encode("utf-8"), ["input", "output"], "local")
    try:
        _fill(manager, [5, 6])
        assert TFNode.DataFeed(manager).next_batch(5) == [5, 6]
    finally:
        manager.shutdown()
    with pytest.raises(ValueError, match="mode"):
        TFManager.start(b"x", ["input"], "bogus")


def test_tfmanager_start_key_guards_its_queues_and_connect_needs_it(ray_cluster):
    from raytfnode.guard import AccessDeniedError

    mgr = TFManager.start("sesame", ["input"])
    try:
        assert mgr.authkey == b"sesame"
        TFManager.connect(mgr.address, b"sesame").get_queue("input").put("with the key")
        assert mgr.get_queue("input").get(timeout=30) == "with the key"
        intruder = TFManager.connect(mgr.address, b"guess")
        with pytest.raises(AccessDeniedError, match="without the cluster's secret"):
            intruder.get_queue("input").put("poison")
        with pytest.raises(AccessDeniedError):
            intruder.get("state")
        with pytest.raises(BadInputError, match="authkey"):
            TFManager.connect(mgr.address)
        assert mgr.get_queue("input").qsize() == 0        # nothing got in
    finally:
        mgr.shutdown()
    unkeyed = TFManager.start(None, ["input"])
    try:
        assert len(unkeyed.authkey) == 32                  # a random key of its own
    finally:
        unkeyed.shutdown()


def test_manager_get_and_set_store_values(mgr):
    assert mgr.get("state") == "running"
    assert mgr.get("no-such-key") is None
    mgr.set("foo", "bar")
    mgr.set("nested", {"a": [1, 2]})
    assert mgr.get("foo") == "bar"
    assert mgr.get("nested") == {"a": [1, 2]}
    mgr.set("foo", 42)
    assert mgr.get("foo") == 42


def test_queue_put_get_task_done_join_qsize_empty(mgr):
    q = mgr.get_queue("output")
    assert q.empty() and q.qsize() == 0
    q.put("a")
    q.put({"b": 2})
    assert q.qsize() == 2 and not q.empty()
    assert q.get(timeout=30) == "a"
    assert q.get(block=True, timeout=30) == {"b": 2}
    assert q.empty()
    # both items taken but not finished: join times out (returns False)
    assert q.join(timeout=0.5) is False
    q.task_done()
    assert q.join(timeout=0.5) is False
    q.task_done()
    assert q.join(timeout=30) is True


def test_queue_get_on_empty_queue_raises_queue_empty(mgr):
    q = mgr.get_queue("error")
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(7)
    assert q.get_nowait() == 7


def test_queue_task_done_more_than_put_raises_value_error(mgr):
    q = mgr.get_queue("output")
    q.put(1)
    q.get(timeout=30)
    q.task_done()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


def test_queue_put_none_is_read_back_as_end_of_feed_marker(mgr):
    q = mgr.get_queue("output")
    q.put(None)
    assert q.get(timeout=30) is None


def test_unknown_queue_name_raises_naming_the_existing_queues(mgr):
    with pytest.raises(KeyError, match="nope"):
        mgr.get_queue("nope").put(1)


def test_queues_are_separate(mgr):
    mgr.get_queue("input").put(1)
    assert mgr.get_queue("input").qsize() == 1
    assert mgr.get_queue("output").qsize() == 0
    assert mgr.get_queue("error").qsize() == 0


@pytest.mark.parametrize("bad_size", [0, -1, -10, 2.5, "3", True])
def test_next_batch_non_positive_or_non_integer_size_raises_bad_input(mgr, bad_size):
    _fill(mgr, range(3))
    feed = TFNode.DataFeed(mgr)
    with pytest.raises(BadInputError, match="batch_size"):
        feed.next_batch(bad_size)
    # nothing was consumed by the rejected calls
    assert feed.next_batch(10) == [0, 1, 2]


def test_batch_results_length_mismatch_names_both_lengths(mgr):
    _fill(mgr, range(10))
    feed = TFNode.DataFeed(mgr)
    batch = feed.next_batch(3)
    assert batch == [0, 1, 2]
    with pytest.raises(BadInputError) as info:
        feed.batch_results([1, 2])
    text = str(info.value)
    assert "2 results" in text and "3 input rows" in text
    with pytest.raises(BadInputError, match="4 results for a batch of 3"):
        feed.batch_results([1, 2, 3, 4])


def test_batch_results_sends_item_results_to_output_queue_in_order(mgr):
    _fill(mgr, range(5))
    feed = TFNode.DataFeed(mgr)
    batch = feed.next_batch(3)
    feed.batch_results([x * 10 for x in batch])
    batch = feed.next_batch(3)
    assert batch == [3, 4]
    feed.batch_results([x * 10 for x in batch])
    out = mgr.get_queue("output")
    results = [out.get(timeout=30) for _ in range(5)]
    assert results == [0, 10, 20, 30, 40]
    with pytest.raises(queue.Empty):
        out.get(timeout=0.5)


def test_input_mapping_returns_arrays_keyed_by_tensor_names_in_sorted_column_order(mgr):
    # columns sort as ['a_col', 'b_col', 'c_col']; tensor names sort the other way round
    input_mapping = {"c_col": "a_tensor", "a_col": "z_tensor", "b_col": "m_tensor"}
    rows = [(i, float(i) / 2, np.full(2, i, dtype=np.float32)) for i in range(6)]
    _fill(mgr, rows)
    feed = TFNode.DataFeed(mgr, input_mapping=input_mapping)
    assert feed.input_tensors == ["z_tensor", "m_tensor", "a_tensor"]
    batch = feed.next_batch(4)
    assert isinstance(batch, dict)
    assert list(batch) == ["z_tensor", "m_tensor", "a_tensor"]
    assert all(isinstance(v, np.ndarray) for v in batch.values())
    np.testing.assert_array_equal(batch["z_tensor"], [0, 1, 2, 3])          # a_col: field 0
    np.testing.assert_array_equal(batch["m_tensor"], [0.0, 0.5, 1.0, 1.5])  # b_col: field 1
    assert batch["a_tensor"].shape == (4, 2)                                 # c_col: field 2
    np.testing.assert_array_equal(batch["a_tensor"][:, 0], [0, 1, 2, 3])
    batch = feed.next_batch(4)
    np.testing.assert_array_equal(batch["z_tensor"], [4, 5])
    assert feed.should_stop()


def test_input_mapping_matches_named_columns_by_name_not_position(mgr):
    """Chunks with column names (as DataFrames give) are matched by name, whatever their column order."""
    import pyarrow as pa

    from raytfnode import chunks

    batch = pa.RecordBatch.from_pydict({"y": [10, 11, 12], "x": [0.0, 1.0, 2.0]})  # not sorted
    chunk = chunks.chunk_from_arrow(batch)
    ref = ray.put(chunk)
    status = ray.get(mgr._actor.put_chunk.remote("input", ("feed", 0, 0, 0, 0), [ref], 3, chunk.nbytes))
    assert status == "queued"
    mgr.get_queue("input").put(None)
    feed = TFNode.DataFeed(mgr, input_mapping={"x": "x_in", "y": "y_in"})
    out = feed.next_batch(10)
    assert list(out) == ["x_in", "y_in"]
    np.testing.assert_array_equal(out["x_in"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["y_in"], [10, 11, 12])
    assert feed.should_stop()


def test_input_mapping_naming_a_missing_column_raises_bad_input(mgr):
    import pyarrow as pa

    from raytfnode import chunks

    chunk = chunks.chunk_from_arrow(pa.RecordBatch.from_pydict({"x": [1, 2]}))
    ray.get(mgr._actor.put_chunk.remote("input", ("feed", 0, 0, 0, 0), [ray.put(chunk)], 2, chunk.nbytes))
    feed = TFNode.DataFeed(mgr, input_mapping={"x": "x_in", "label": "y_in"})
    with pytest.raises(BadInputError, match="label"):
        feed.next_batch(2)


def test_deprecated_module_functions_work_and_warn(mgr):
    _fill(mgr, range(10), end=False)
    with pytest.warns(DeprecationWarning, match="next_batch"):
        batch = TFNode.next_batch(mgr, 3)
    assert batch == [0, 1, 2]
    with pytest.warns(DeprecationWarning, match="batch_results"):
        TFNode.batch_results(mgr, ["r0", "r1", "r2"])
    out = mgr.get_queue("output")
    assert [out.get(timeout=30) for _ in range(3)] == ["r0", "r1", "r2"]
    with pytest.warns(DeprecationWarning, match="next_batch"):
        assert TFNode.next_batch(mgr, 2) == [3, 4]
    with pytest.warns(DeprecationWarning, match="terminate"):
        TFNode.terminate(mgr)
    assert mgr.get("state") == "terminating"
    assert mgr.get_queue("input").qsize() == 0  # the 5 unread rows were dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        TFNode.DataFeed(mgr)  # the class itself is not deprecated: a warning would raise here


def test_terminate_drops_queued_data_and_stops_the_feed(mgr):
    _fill(mgr, range(100), end=False)
    feed = TFNode.DataFeed(mgr)
    assert feed.next_batch(5) == [0, 1, 2, 3, 4]
    assert not feed.should_stop()
    feed.terminate()
    assert feed.should_stop()
    assert mgr.get_queue("input").qsize() == 0
    assert mgr.get("state") == "terminating"
    assert feed.next_batch(5) == []


def _read_all(manager, batch_size):
    feed = TFNode.DataFeed(manager)
    rows = []
    while not feed.should_stop():
        rows.extend(feed.next_batch(batch_size))
    manager.set("reader", "done")
    return rows


@ray.remote(num_cpus=0)
def _read_in_task(manager, batch_size):
    return _read_all(manager, batch_size)


@ray.remote(num_cpus=0)
class _Reader:
    def __init__(self, manager):
        self.manager = manager

    def read(self, batch_size):
        return _read_all(self.manager, batch_size)


def test_datafeed_in_a_separate_ray_task_reads_the_data_of_a_passed_mgr(mgr):
    _fill(mgr, range(25))
    rows = ray.get(_read_in_task.remote(mgr, 4), timeout=240)
    assert rows == list(range(25))
    assert mgr.get("reader") == "done"
    assert mgr.get_queue("input").qsize() == 0


def test_datafeed_in_a_separate_ray_actor_reads_the_data_of_a_passed_mgr(mgr):
    reader = _Reader.remote(mgr)
    try:
        result = reader.read.remote(3)   # starts waiting before any data is there
        _fill(mgr, [(i, "row-{}".format(i)) for i in range(7)])
        rows = ray.get(result, timeout=240)
    finally:
        ray.kill(reader)
    assert rows == [(i, "row-{}".format(i)) for i in range(7)]
