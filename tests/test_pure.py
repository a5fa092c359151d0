"""Pure functions of raytfnode, no Ray cluster: roles, paths, chunk encoding, balanced splitting."""
import collections
import sys
import getpass
import json
import random
import types

import numpy as np
import pyarrow as pa
import pytest

from raytfnode import TFNode, chunks, coordinator, paths, roles, stored
from raytfnode.resources import node_request, placement_waves
from raytfnode.result_blocks import join_results, slices
from raytfnode.errors import BadInputError

# --------------------------------------------------------------------- roles


def test_cluster_template_orders_ps_master_evaluator_then_workers():
    template = roles.cluster_template(7, 2, master_node="chief", eval_node=True)
    assert list(template) == ["ps", "chief", "evaluator", "worker"]
    assert template == {"ps": [0, 1], "chief": [2], "evaluator": [3], "worker": [4, 5, 6]}
    assert roles.node_roles(template) == [("ps", 0), ("ps", 1), ("chief", 0), ("evaluator", 0),
                                          ("worker", 0), ("worker", 1), ("worker", 2)]


def test_cluster_template_without_ps_master_or_evaluator_is_all_workers():
    assert roles.cluster_template(3, 0) == {"worker": [0, 1, 2]}
    assert roles.cluster_template(2, 0, master_node="master") == {"master": [0], "worker": [1]}


def test_cluster_template_too_few_executors_raises_value_error_naming_the_numbers():
    with pytest.raises(ValueError) as info:
        roles.cluster_template(3, 2, master_node="chief")
    text = str(info.value)
    assert "num_executors=3" in text
    assert "2 ps" in text and "1 chief" in text
    assert "at least 4" in text
    with pytest.raises(ValueError, match="at least 3"):
        roles.cluster_template(2, 1, eval_node=True)


def test_cluster_template_rejects_negative_ps_and_unknown_master_name():
    with pytest.raises(ValueError, match="num_ps"):
        roles.cluster_template(3, -1)
    with pytest.raises(ValueError, match="boss"):
        roles.cluster_template(3, 0, master_node="boss")


def test_coordination_leader_is_tensorflows_ps_0_else_chief_0_else_worker_0():
    from tensorflow.python.distribute import multi_worker_util
    cases = [roles.node_roles(roles.cluster_template(3, 0)),
             roles.node_roles(roles.cluster_template(4, 1, master_node="chief", eval_node=True)),
             roles.node_roles(roles.cluster_template(3, 0, master_node="chief")),
             roles.node_roles(roles.cluster_template(3, 0, master_node="master")),
             [("worker", 1), ("chief", 0), ("worker", 0)]]
    for node_roles in cases:
        eid = roles.coordination_leader(node_roles)
        spec = roles.cluster_spec(node_roles, ["h:{}".format(i) for i in range(len(node_roles))])
        spec.pop("evaluator", None)
        job_name, task_index = node_roles[eid]
        assert "/job:{}/replica:0/task:{}".format(job_name, task_index) == \
            multi_worker_util.coordination_leader(spec), node_roles
    assert roles.coordination_leader([("evaluator", 0)]) is None


def test_cluster_spec_lists_each_job_in_task_index_order():
    # executor ids out of task order: worker:1 is executor 0, worker:0 is executor 2
    node_roles = [("worker", 1), ("ps", 0), ("worker", 0), ("chief", 0)]
    addresses = ["h:1", "h:2", "h:3", "h:4"]
    spec = roles.cluster_spec(node_roles, addresses)
    assert spec == {"worker": ["h:3", "h:1"], "ps": ["h:2"], "chief": ["h:4"]}


def test_cluster_spec_of_a_template_follows_template_order():
    node_roles = roles.node_roles(roles.cluster_template(5, 1, master_node="chief", eval_node=True))
    addresses = ["host:{}".format(9000 + i) for i in range(5)]
    spec = roles.cluster_spec(node_roles, addresses)
    assert list(spec) == ["ps", "chief", "evaluator", "worker"]
    assert spec == {"ps": ["host:9000"], "chief": ["host:9001"], "evaluator": ["host:9002"],
                    "worker": ["host:9003", "host:9004"]}


def test_cluster_spec_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 roles but 1 addresses"):
        roles.cluster_spec([("worker", 0), ("worker", 1)], ["h:1"])


def test_tf_config_is_json_for_every_role_and_leaves_evaluator_out_of_cluster():
    spec = {"ps": ["h:1"], "chief": ["h:2"], "evaluator": ["h:3"], "worker": ["h:4", "h:5"]}
    for job_name, task_index in [("ps", 0), ("chief", 0), ("evaluator", 0), ("worker", 0), ("worker", 1)]:
        config = json.loads(roles.tf_config(spec, job_name, task_index))
        assert config["task"] == {"type": job_name, "index": task_index}
        assert config["cluster"] == {"ps": ["h:1"], "chief": ["h:2"], "worker": ["h:4", "h:5"]}
        assert "evaluator" not in config["cluster"]
    # the spec passed in is not modified
    assert spec["evaluator"] == ["h:3"]


def test_tf_config_is_produced_for_a_cluster_without_chief():
    spec = {"worker": ["h:1", "h:2", "h:3"]}
    config = json.loads(roles.tf_config(spec, "worker", 2))
    assert config["cluster"] == spec
    assert config["task"] == {"type": "worker", "index": 2}


def test_feedable_nodes_are_chief_master_and_workers_only():
    node_roles = roles.node_roles(roles.cluster_template(6, 2, master_node="chief", eval_node=True))
    assert roles.feedable(node_roles) == [2, 4, 5]
    assert roles.node_name("worker", 1) == "worker:1"


def test_nodes_pinned_by_a_resource_of_their_own_are_placed_before_the_nodes_free_to_go_anywhere():
    pins = {"ps": {"num_gpus": 0, "resources": {"tf": 1, "machine-3": 1}},
            "chief": {"resources": {"tf": 1, "machine-2": 1}}}
    jobs = ["ps", "chief", "worker", "worker", "worker"]
    requests = [node_request(job, num_gpus=1, resources={"tf": 1}, role_resources=pins) for job in jobs]
    assert placement_waves(requests) == [[0, 1], [2, 3, 4]]
    # one wave when every node asks alike, when every node is pinned, and when there are no custom resources
    assert placement_waves([node_request(job, resources={"tf": 1}) for job in jobs]) == [[0, 1, 2, 3, 4]]
    assert placement_waves([node_request("worker", resources={"machine-{}".format(i): 1}) for i in range(3)]) == [
        [0, 1, 2]]
    assert placement_waves([node_request(job) for job in jobs]) == [[0, 1, 2, 3, 4]]
    assert placement_waves([]) == [[]]


def test_inference_results_alike_arrays_join_into_one_array_and_anything_else_into_a_list():
    rows = [np.arange(3, dtype=np.float32) + i for i in range(5)]
    block = join_results([np.stack(rows[:2]), rows[2:4], [rows[4]]])   # an array part and lists of row arrays
    assert isinstance(block, np.ndarray) and block.shape == (5, 3) and block.dtype == np.float32
    assert [r.tolist() for r in block] == [r.tolist() for r in rows]
    assert [len(piece) for piece in slices(block, 2)] == [2, 2, 1]
    # kept as lists, in order: other objects, 0-d arrays, rows of two shapes or dtypes, object arrays
    assert join_results([["a", "b"], ["c"]]) == ["a", "b", "c"]
    for parts in ([[np.float32(1.0), np.float32(2.0)]], [[np.zeros(2), np.zeros(3)]],
                  [[np.zeros(2)], [np.zeros(2, dtype=np.int64)]], [np.array([{"a": 1}, None])],
                  [[np.array(1.0), np.array(2.0)]]):
        joined = join_results(parts)
        assert isinstance(joined, list) and len(joined) == sum(len(p) for p in parts), parts
    assert join_results([]) == []


# --------------------------------------------------------------------- paths


def _ctx(default_fs, working_dir):
    return types.SimpleNamespace(defaultFS=default_fs, working_dir=working_dir)


@pytest.mark.parametrize("default_fs", ["file://", "hdfs://", "viewfs://", "hdfs://namenode:8020"])
@pytest.mark.parametrize("path", ["hdfs://foo/bar", "viewfs://foo/bar", "file://foo/bar", "s3://bucket/key",
                                  "gs://b/k"])
def test_hdfs_path_leaves_schemed_paths_unchanged(default_fs, path):
    assert TFNode.hdfs_path(_ctx(default_fs, "/some/dir"), path) == path
    assert paths.absolute_path(default_fs, "/some/dir", path) == path


def test_hdfs_path_table_of_tensorflowonspark_unit_test():
    """The table of TensorFlowOnSpark's own test_hdfs_path, with its mock context."""
    cwd = "/home/someone/project"
    user = getpass.getuser()
    fs = ["file://", "hdfs://", "viewfs://"]
    expected_by_path = {
        "hdfs://foo/bar": ["hdfs://foo/bar", "hdfs://foo/bar", "hdfs://foo/bar"],
        "viewfs://foo/bar": ["viewfs://foo/bar", "viewfs://foo/bar", "viewfs://foo/bar"],
        "file://foo/bar": ["file://foo/bar", "file://foo/bar", "file://foo/bar"],
        "/foo/bar": ["file:///foo/bar", "hdfs:///foo/bar", "viewfs:///foo/bar"],
        "foo/bar": ["file://{}/foo/bar".format(cwd), "hdfs:///user/{}/foo/bar".format(user),
                    "viewfs:///user/{}/foo/bar".format(user)],
    }
    for i, default_fs in enumerate(fs):
        ctx = type("MockContext", (), {"defaultFS": default_fs, "working_dir": cwd})
        for path, expected in expected_by_path.items():
            assert TFNode.hdfs_path(ctx, path) == expected[i], (default_fs, path)


def test_absolute_path_gives_slash_paths_the_default_fs():
    assert TFNode.hdfs_path(_ctx("hdfs://namenode:8020", "/w"), "/x/y") == "hdfs://namenode:8020/x/y"
    assert TFNode.hdfs_path(_ctx("viewfs://cluster", "/w"), "/x") == "viewfs://cluster/x"
    assert TFNode.hdfs_path(_ctx("file://", "/w"), "/x") == "file:///x"


def test_relative_paths_go_under_user_dir_on_hdfs_and_viewfs():
    user = getpass.getuser()
    assert TFNode.hdfs_path(_ctx("hdfs://namenode:8020", "/w"), "models/m1") == \
        "hdfs://namenode:8020/user/{}/models/m1".format(user)
    assert TFNode.hdfs_path(_ctx("viewfs://cluster", "/w"), "m") == "viewfs://cluster/user/{}/m".format(user)
    assert paths.absolute_path("hdfs://nn", "/w", "m", user="alice") == "hdfs://nn/user/alice/m"


def test_relative_paths_go_under_working_dir_on_file_fs():
    assert TFNode.hdfs_path(_ctx("file://", "/tmp/work"), "model/ckpt") == "file:///tmp/work/model/ckpt"
    assert TFNode.hdfs_path(_ctx("file://", "/tmp/work/"), "m") == "file:///tmp/work/m"
    assert TFNode.hdfs_path(_ctx("file://", "/"), "m") == "file:///m"


def test_absolute_path_with_trailing_slash_default_fs_keeps_one_scheme_separator():
    # Hadoop's default fs.defaultFS (what a local SparkContext reports) is 'file:///'
    assert paths.absolute_path("file:///", "/tmp/work", "/x") == "file:///x"
    assert paths.absolute_path("file:///", "/tmp/work", "m") == "file:///tmp/work/m"
    assert paths.absolute_path("hdfs://namenode:8020/", "/w", "/x") == "hdfs://namenode:8020/x"


def test_context_absolute_path_matches_hdfs_path():
    from raytfnode.context import TFNodeContext

    ctx = TFNodeContext(defaultFS="hdfs://nn:8020", working_dir="/w")
    for path in ["/a", "b/c", "file:///d"]:
        assert ctx.absolute_path(path) == TFNode.hdfs_path(ctx, path)


# -------------------------------------------------------------------- chunks


def test_encode_rows_round_trips_scalars_as_python_scalars():
    for rows in ([3, 1, 4, 1, 5], [2.5, -1.0, 0.0], [True, False]):
        chunk = chunks.encode_rows(rows)
        back = chunk.rows()
        assert back == rows
        assert [type(v) for v in back] == [type(v) for v in rows]
        assert len(chunk) == len(rows)


def test_encode_rows_round_trips_tuples_with_numpy_arrays():
    rows = [(np.arange(3, dtype=np.float32) + i, i, "label-{}".format(i)) for i in range(5)]
    chunk = chunks.encode_rows(rows)
    back = chunk.rows()
    assert len(back) == 5
    for original, row in zip(rows, back):
        assert isinstance(row, tuple)
        assert isinstance(row[0], np.ndarray)
        assert row[0].dtype == np.float32 and row[0].shape == (3,)
        np.testing.assert_array_equal(row[0], original[0])
        assert row[1] == original[1] and type(row[1]) is int
        assert row[2] == original[2]
    # the array column is one (n, 3) array
    assert chunk.columns[0].shape == (5, 3)


def test_encode_rows_round_trips_lists_of_numbers_as_lists():
    rows = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]
    chunk = chunks.encode_rows(rows)
    assert chunk.rows() == rows
    assert all(isinstance(r, list) for r in chunk.rows())
    nested = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    assert chunks.encode_rows(nested).rows() == nested


def test_encode_rows_round_trips_strings_and_objects():
    strings = ["a", "bc", ""]
    assert chunks.encode_rows(strings).rows() == strings
    objects = [{"k": 1}, {"k": [2, 3]}, None]
    assert chunks.encode_rows(objects).rows() == objects
    mixed_fields = [["x", 1], ["y", 2]]
    assert chunks.encode_rows(mixed_fields).rows() == mixed_fields


def test_encode_rows_mixed_array_shapes_raise_bad_input_naming_the_row():
    rows = [np.zeros(3), np.zeros(3), np.zeros(4)]
    with pytest.raises(BadInputError, match=r"row 2\b") as info:
        chunks.encode_rows(rows, where="partition 5")
    assert "partition 5" in str(info.value)
    assert "(4,)" in str(info.value) and "(3,)" in str(info.value)
    with pytest.raises(BadInputError, match=r"row 1\b"):
        chunks.encode_rows([(np.zeros(2), 1), (np.zeros(3), 2)])
    with pytest.raises(BadInputError, match=r"row 1\b"):
        chunks.encode_rows([[1, 2], [1, 2, 3]])


def test_encode_rows_rows_with_different_field_counts_raise_bad_input():
    with pytest.raises(BadInputError, match=r"row 1 has 3 fields but the first row has 2"):
        chunks.encode_rows([(1, 2), (1, 2, 3)])


def test_encode_rows_row_index_counts_from_first_row_index():
    with pytest.raises(BadInputError, match=r"row 102\b"):
        chunks.encode_rows([np.zeros(2), np.zeros(2), np.zeros(5)], first_row_index=100)


def test_encode_rows_none_in_numeric_column_raises_bad_input():
    with pytest.raises(BadInputError, match=r"row 1 is None") as info:
        chunks.encode_rows([1.0, None, 3.0])
    assert "numeric" in str(info.value)
    with pytest.raises(BadInputError, match=r"column 0: row 1 is None"):
        chunks.encode_rows([(1, 2.0), (None, 3.0)])
    with pytest.raises(BadInputError, match=r"row 1\b"):
        chunks.encode_rows([[1, 2], [1, None]])


def test_encode_rows_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one row"):
        chunks.encode_rows([])


def test_chunk_rows_boundaries_are_deterministic_and_keep_every_row():
    rng = np.random.default_rng(7)
    rows = [(rng.random(4).astype(np.float32), int(i)) for i in range(1000)]
    first = list(chunks.chunk_rows(iter(rows), target_bytes=1000, max_rows=10000))
    second = list(chunks.chunk_rows(iter(rows), target_bytes=1000, max_rows=10000))
    sizes = [len(c) for c in first]
    assert sizes == [len(c) for c in second]
    assert len(sizes) > 1
    assert sum(sizes) == len(rows)
    # every chunk but the last has the same size
    assert len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]
    back = [row for chunk in first for row in chunk.rows()]
    assert [r[1] for r in back] == list(range(1000))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.columns[0], b.columns[0])


def test_chunk_rows_respects_max_rows():
    sizes = [len(c) for c in chunks.chunk_rows(range(25), target_bytes=1 << 30, max_rows=10)]
    assert sizes == [10, 10, 5]
    assert list(chunks.chunk_rows(iter([]))) == []


def test_chunk_rows_names_the_bad_row_within_the_whole_partition():
    rows = [np.zeros(2)] * 37 + [np.zeros(3)]
    with pytest.raises(BadInputError, match=r"partition 9 value: row 37\b"):
        list(chunks.chunk_rows(rows, target_bytes=16 * 10, max_rows=100, where="partition 9"))


def _encoded_in_runs(rows, per_chunk):
    layout = chunks.row_layout(rows[0])
    return [chunks.encode_rows(rows[i:i + per_chunk], layout, "", i) for i in range(0, len(rows), per_chunk)]


def _assert_same_chunks(got, expected):
    assert [(c.num_rows, c.kinds, c.row_kind, c.names) for c in got] == \
        [(c.num_rows, c.kinds, c.row_kind, c.names) for c in expected]
    for a, b in zip(got, expected):
        for x, y in zip(a.columns, b.columns):
            if isinstance(y, np.ndarray):
                assert x.dtype == y.dtype and x.shape == y.shape
                np.testing.assert_array_equal(x, y)
            else:
                assert x == y


@pytest.mark.parametrize("make_row", [
    lambda rng, i: (rng.random(6, dtype=np.float32), i),
    lambda rng, i: rng.integers(0, 9, (2, 3)),
    lambda rng, i: collections.namedtuple("Row", "image label name mask")(
        rng.random(6, dtype=np.float32), i, "r{}".format(i), rng.random(2) > 0.5),
    lambda rng, i: [rng.random(3), "mixed", i],
], ids=["array+label", "single 2-D array", "named fields", "list of fields"])
def test_chunk_rows_copies_array_rows_into_the_same_chunks_as_stacking_them(make_row):
    rng = np.random.default_rng(3)
    rows = [make_row(rng, i) for i in range(107)]
    got = list(chunks.chunk_rows(iter(rows), target_bytes=200, max_rows=1000))
    per_chunk = chunks.rows_per_chunk(rows[0], 200, 1000)
    assert 1 < per_chunk < 107 and 107 % per_chunk   # several chunks, the last one short
    _assert_same_chunks(got, _encoded_in_runs(rows, per_chunk))
    assert [row[1] if isinstance(row, tuple) else None for row in (r for c in got for r in c.rows())] == \
        [row[1] if isinstance(row, tuple) else None for row in rows]


def test_chunk_rows_holds_about_target_bytes_of_the_python_rows_it_buffers():
    # ten Python floats are 80 bytes in a chunk but about 370 as a tuple: the tuples a chunk waits for
    # are what bounds it, not its encoded size
    rows = [tuple(float(i + k) for k in range(10)) for i in range(3000)]
    target = 64 << 10
    got = list(chunks.chunk_rows(iter(rows), target_bytes=target, max_rows=1 << 20))
    row_objects = sys.getsizeof(rows[0]) + sum(sys.getsizeof(v) for v in rows[0]) + 8   # + its list slot
    assert target / 2 < got[0].num_rows * row_objects <= target
    assert got[0].nbytes < target / 4
    assert [c.num_rows for c in got[:-1]] == [got[0].num_rows] * (len(got) - 1)
    assert [r for c in got for r in c.rows()] == rows


def test_chunk_rows_cuts_rows_whose_objects_cannot_tell_their_size():
    class Opaque:
        def __sizeof__(self):
            raise RuntimeError("no size")

    rows = [(Opaque(), i) for i in range(5)]
    got = list(chunks.chunk_rows(iter(rows)))
    assert [c.num_rows for c in got] == [5] and [r[1] for r in got[0].rows()] == list(range(5))


def test_chunk_rows_puts_300000_one_number_rows_in_one_chunk_by_default():
    # every chunk costs actor calls: small rows make few, large chunks (about 36 bytes each as Python ints)
    got = list(chunks.chunk_rows(iter(range(300000))))
    assert [c.num_rows for c in got] == [300000]
    assert got[0].columns[0].dtype == np.int64 and got[0].columns[0][-1] == 299999


def test_chunk_rows_gives_a_chunk_with_a_differing_row_numpys_type_promotion():
    rows = [(np.full(4, i, dtype=np.float32), i) for i in range(30)]
    rows[13] = (rows[13][0].astype(np.float64), 13)   # in the second chunk of 10
    rows[25] = (rows[25][0].tolist(), 25)              # a list of numbers in the third
    got = list(chunks.chunk_rows(iter(rows), target_bytes=(16 + 8) * 10, max_rows=1000))
    assert [c.columns[0].dtype for c in got] == [np.float32, np.float64, np.float64]
    _assert_same_chunks(got, _encoded_in_runs(rows, 10))


def test_chunk_rows_of_arrays_names_a_bad_row_after_rows_already_copied():
    rows = [(np.zeros(2, np.float32), 1)] * 23 + [(np.zeros(3, np.float32), 1)]
    with pytest.raises(BadInputError, match=r"partition 4 column 0: row 23 is an array of shape \(3,\)"):
        list(chunks.chunk_rows(rows, target_bytes=16 * 10, max_rows=100, where="partition 4"))
    rows = [(np.zeros(2, np.float32), 1)] * 23 + [(np.zeros(2, np.float32),)]
    with pytest.raises(BadInputError, match=r"partition 4: row 23 has 1 fields but the first row has 2"):
        list(chunks.chunk_rows(rows, target_bytes=16 * 10, max_rows=100, where="partition 4"))
    rows = [(np.zeros(2, np.float32), 1)] * 23 + [(np.zeros(2, np.float32), None)]
    with pytest.raises(BadInputError, match=r"partition 4 column 1: row 23 is None in a numeric column"):
        list(chunks.chunk_rows(rows, target_bytes=16 * 10, max_rows=100, where="partition 4"))


def test_chunk_from_arrow_list_of_float_column_becomes_2d_array():
    batch = pa.RecordBatch.from_pydict({
        "features": pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], type=pa.list_(pa.float32())),
        "label": pa.array([0, 1], type=pa.int64()),
        "name": ["a", "b"],
    })
    chunk = chunks.chunk_from_arrow(batch)
    assert chunk.names == ("features", "label", "name")
    features, label, name = chunk.columns
    assert isinstance(features, np.ndarray) and features.shape == (2, 3) and features.dtype == np.float32
    np.testing.assert_array_equal(features, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(label, [0, 1])
    assert name == ["a", "b"]
    rows = chunk.rows()
    np.testing.assert_array_equal(rows[1][0], [4.0, 5.0, 6.0])
    assert rows[1][1:] == (1, "b")


def test_chunk_from_arrow_accepts_a_table_and_fixed_size_lists():
    table = pa.table({"m": pa.array([[1, 2], [3, 4], [5, 6]], type=pa.list_(pa.int32(), 2))})
    chunk = chunks.chunk_from_arrow(table)
    assert chunk.columns[0].shape == (3, 2)


def test_chunk_from_arrow_rejects_nulls_naming_column_and_row():
    batch = pa.RecordBatch.from_pydict({"x": [1.0, None, 3.0]})
    with pytest.raises(BadInputError, match=r"partition 4 column x: row 11 is null"):
        chunks.chunk_from_arrow(batch, where="partition 4", first_row_index=10)
    null_list = pa.RecordBatch.from_pydict({"f": pa.array([[1.0, 2.0], None], type=pa.list_(pa.float32()))})
    with pytest.raises(BadInputError, match=r"column f: row 1 is null"):
        chunks.chunk_from_arrow(null_list)
    null_element = pa.RecordBatch.from_pydict({"f": pa.array([[1.0, 2.0], [1.0, None]], type=pa.list_(pa.float32()))})
    with pytest.raises(BadInputError, match=r"column f: .*null"):
        chunks.chunk_from_arrow(null_element)


def test_chunk_from_arrow_rejects_ragged_lists_naming_the_row():
    ragged = pa.RecordBatch.from_pydict({"f": pa.array([[1.0, 2.0], [1.0, 2.0], [1.0]], type=pa.list_(pa.float32()))})
    with pytest.raises(BadInputError, match=r"row 2 has length 1 but the first row has length 2"):
        chunks.chunk_from_arrow(ragged)


def test_stored_block_rows_cut_a_table_by_rows_and_read_back_as_views_of_its_buffers():
    images = np.arange(100 * 8, dtype=np.float32).reshape(100, 8)       # 32 bytes + 8 (label) per row
    table = pa.Table.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 8),
                                  pa.array(np.arange(100, dtype=np.int64))], names=["image", "label"])
    block_ref = object()                       # held, never resolved: any token stands for the ref
    pieces = list(stored.stored_block_rows(block_ref, table, chunk_rows=30))
    assert [(p.start, p.stop) for p in pieces] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert all(p.box()[0] is block_ref for p in pieces) and pieces[0].nbytes == 30 * 40
    half = pieces[1].slice(5, 20)              # relative, as Chunk.slice
    assert (half.start, half.stop, half.num_rows) == (35, 50, 15)
    whole = chunks.chunk_from_arrow(table)
    chunk = stored.chunk_of(table, half.box())
    np.testing.assert_array_equal(chunk.columns[0], images[35:50])
    np.testing.assert_array_equal(chunk.columns[1], np.arange(35, 50))
    assert np.shares_memory(chunk.columns[0], whole.columns[0])   # a view of the block, not a copy
    assert np.shares_memory(chunk.columns[1], whole.columns[1])
    small = chunks.encode_rows(list(range(10)))
    assert stored.chunk_of(small, [None]) is small and stored.chunk_of(small, [None, 2, 5]).rows() == [2, 3, 4]


def test_small_stored_pieces_join_runs_that_read_back_as_one_chunk_in_order():
    tables = [pa.table({"x": pa.array(np.arange(10 * b, 10 * b + 10, dtype=np.int64))}) for b in range(4)]
    refs = ["block{}".format(b) for b in range(4)]   # tokens: never resolved here
    pieces = [p for ref, table in zip(refs, tables) for p in stored.block_pieces(ref, 10, 8.0, chunk_rows=100)]
    # 80-byte pieces against 400-byte chunks: each is small (under 1/SMALL_PIECE_SHARE of a chunk); a run
    # stops at 30 rows here
    runs = stored.runs_of(pieces, max_bytes=400, max_rows=30)
    assert [type(r).__name__ for r in runs] == ["StoredRun", "StoredRows"]
    assert runs[0].num_rows == 30 and runs[0].nbytes == 240 and runs[1].box() == ["block3", 0, 10]
    run = runs[0]
    assert run.box() == [["block0", "block1", "block2"], [0, 0, 0], [10, 10, 10]]
    assert stored.chunk_of(tables[:3], run.box()).columns[0].tolist() == list(range(30))
    # a node's share of a run is a run (or one piece) of the same rows
    part = run.slice(5, 25)
    assert part.box() == [["block0", "block1", "block2"], [5, 0, 0], [10, 10, 5]]
    assert stored.chunk_of(tables[:3], part.box()).columns[0].tolist() == list(range(5, 25))
    assert run.slice(12, 18).box() == ["block1", 2, 8]
    # a reader that handed out 7 rows gives back the rest
    rest = stored.box_without(part.box(), 7, 20)
    assert rest == [["block1", "block2"], [2, 0], [10, 5]]
    assert stored.chunk_of(tables[1:3], rest).columns[0].tolist() == list(range(12, 25))
    # a big piece stays alone (read as a view), and runs never mix the nodes a locality plan chose
    big = stored.StoredRows("big", 0, 50, 8.0)
    planned = [stored.StoredRows("a", 0, 5, 8.0, slot=0), stored.StoredRows("b", 0, 5, 8.0, slot=1)]
    assert [type(r).__name__ for r in stored.runs_of([pieces[0], big, pieces[1]], 400, 100)] == ["StoredRows"] * 3
    assert [r.slot for r in stored.runs_of(planned, 400, 100)] == [0, 1]
    assert [r.num_rows for r in stored.runs_of(pieces, max_bytes=330, max_rows=100)] == [40]   # 320 bytes fit
    # none small: 80-byte pieces are not under 1/SMALL_PIECE_SHARE of a chunk
    assert [r.num_rows for r in stored.runs_of(pieces, max_bytes=80 * stored.SMALL_PIECE_SHARE, max_rows=100)] == \
        [10] * 4


def test_runs_keep_each_nodes_pieces_in_order_when_a_plan_alternates_nodes():
    pieces = [stored.StoredRows("b{}".format(i), 0, 10, 8.0, slot=i % 2) for i in range(6)]
    runs = stored.runs_of(pieces, max_bytes=4000, max_rows=1000)
    assert [(r.slot, r.box()[0]) for r in runs] == [(0, ["b0", "b2", "b4"]), (1, ["b1", "b3", "b5"])]


def test_small_blocks_join_per_machine_within_the_run_limits_and_each_machines_budget():
    # 400 blocks of 150 rows x 8 bytes (1,200 bytes) alternating over two machines, 4,096-byte chunks
    layouts, homes = [(150, 8.0)] * 400, ["m1", "m2"] * 200
    units = stored.join_plan(layouts, homes, chunk_bytes=4096, max_bytes=4 * 4096, max_rows=10 ** 6,
                             budgets={"m1": 10 ** 9, "m2": 10 ** 9})
    assert sorted(i for unit in units for i in unit) == list(range(400))   # every block once
    assert all(len({homes[i] for i in unit}) == 1 for unit in units)     # a join never crosses machines
    assert all(unit == sorted(unit) for unit in units) and [u[0] for u in units] == sorted(u[0] for u in units)
    assert max(sum(layouts[i][0] * layouts[i][1] for i in unit) for unit in units) <= 4 * 4096
    assert len(units) == 2 * -(-200 // 13)                                 # 13 blocks fit 16 KiB
    # rows bound a run too; a block of half a chunk or more is fed as it is
    assert [len(u) for u in stored.join_plan(layouts[:6], ["m"] * 6, 4096, 10 ** 6, 300, {"m": 10 ** 9})] == [2] * 3
    assert stored.join_plan([(150, 8.0), (300, 8.0), (150, 8.0)], ["m"] * 3, 4096, 10 ** 6, 10 ** 6,
                            {"m": 10 ** 9}) == [[0, 2], [1]]
    # the budget counts the joined copies, both blocks of a first pair included; no budget: no join
    assert stored.join_plan(layouts[:4], ["m"] * 4, 4096, 10 ** 6, 10 ** 6, {"m": 3600}) == [[0, 1, 2], [3]]
    assert stored.join_plan(layouts[:4], ["m"] * 4, 4096, 10 ** 6, 10 ** 6, {"m": 0}) == [[0], [1], [2], [3]]
    assert stored.join_plan(layouts[:2], [None, None], 4096, 10 ** 6, 10 ** 6, {None: 10 ** 9}) == [[0, 1]]
    assert stored.joined_layout([(150, 8.0), (50, 16.0)]) == (200, 10.0)


def test_joined_blocks_read_back_as_the_blocks_rows_in_order():
    def table(b):
        images = np.full((10, 4), b, dtype=np.float32)
        return pa.Table.from_arrays([pa.array(np.arange(10 * b, 10 * b + 10, dtype=np.int64)),
                                     pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 4)],
                                    names=["x", "image"])

    tables = [table(b) for b in range(3)]
    labels = ["block 0", "block 1", "block 2"]
    joined = stored.join_blocks(tables[:2] + [chunks.chunk_from_arrow(tables[2])], labels)   # tables or chunks
    assert joined.num_rows == 30 and joined.columns[0].tolist() == list(range(30))
    assert joined.columns[1].shape == (30, 4) and joined.columns[1][:, 0].tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert stored.chunk_of(joined, [None, 12, 15]).columns[0].tolist() == [12, 13, 14]
    # blocks of another schema cannot be joined: the error names both blocks and the columns
    renamed = tables[1].rename_columns(["id", "image"])
    with pytest.raises(BadInputError, match=r"block 0 and block 1 of the Ray Dataset have different columns: "
                                            r"x \(scalar\), image \(ndarray of shape \(4,\)\) against id"):
        stored.join_blocks([tables[0], renamed], labels[:2])
    wider = table(1).set_column(1, "image", pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(50, np.float32)), 5))
    with pytest.raises(BadInputError, match=r"image \(ndarray of shape \(5,\)\)"):
        stored.join_blocks([tables[0], wider], labels[:2])

def test_a_block_held_on_several_machines_is_read_from_a_reader_machine_whatever_order_ray_lists_them():
    from raytfnode import locality
    # Ray lists a block's copies in no particular order and does not say which is the primary
    for holders in (["head", "m3"], ["m3", "head"]):
        assert locality.home_machines([holders, ["m1"], []], ["m1", "m3"]) == ["m3", "m1", None]
    assert locality.home_machines([["m2", "m1"], ["m1", "m2"]]) == ["m1", "m1"]      # no readers: the lowest id
    assert locality.home_machines([["head", "m3", "m1"]], ["m3", "m1", "m3"]) == ["m1"]


@pytest.mark.parametrize("block_rows,num_slots", [([3, 3, 3], 2), ([150] * 400, 2), ([1500] * 40, 3),
                                                  ([7, 0, 1, 30, 2], 4), ([5], 3)])
def test_contiguous_plan_gives_each_node_its_level_share_in_whole_blocks_but_for_a_few(block_rows, num_slots):
    from raytfnode import locality
    plan = locality.contiguous_plan(block_rows, num_slots)
    got = [0] * num_slots
    for rows, ranges in zip(block_rows, plan):
        assert [(start, stop) for _, start, stop in ranges] == list(zip(
            [0] + [stop for _, _, stop in ranges[:-1]], [stop for _, _, stop in ranges])) or rows == 0
        assert sum(stop - start for _, start, stop in ranges) == rows      # every row once, in order
        for slot, start, stop in ranges:
            got[slot] += stop - start
    assert got == locality.level_targets(sum(block_rows), num_slots)
    assert sum(len(ranges) > 1 for ranges in plan) <= num_slots - 1        # split only where a share ends
    slots_in_order = [slot for ranges in plan for slot, _, _ in ranges]
    assert slots_in_order == sorted(slots_in_order)                        # contiguous stretches


def test_stored_block_rows_reject_bad_input_in_the_producer_naming_block_and_row():
    table = pa.table({"x": pa.array([1.0, 2.0, None])})
    with pytest.raises(BadInputError, match=r"block 3 column x: row 2 is null"):
        list(stored.stored_block_rows(object(), table, 100, where="block 3"))


def test_chunk_from_arrow_reads_a_one_chunk_table_column_without_copying():
    values = pa.array(np.arange(1000, dtype=np.int64))
    table = pa.Table.from_arrays([values], names=["x"])
    assert np.shares_memory(chunks.chunk_from_arrow(table).columns[0], values.to_numpy())


def test_concat_chunks_and_slice_round_trip():
    rows = [(np.full(2, i, dtype=np.float64), "s{}".format(i)) for i in range(10)]
    chunk = chunks.encode_rows(rows)
    parts = [chunk.slice(0, 3), chunk.slice(3, 7), chunk.slice(7, 10)]
    joined = chunks.concat_chunks(parts)
    assert len(joined) == 10
    np.testing.assert_array_equal(joined.columns[0], chunk.columns[0])
    assert joined.columns[1] == chunk.columns[1]


# --------------------------------------------------------------- level_split


def test_level_split_keeps_totals_within_one_row_and_preserves_the_sum():
    rng = random.Random(12345)
    for _ in range(3000):
        slots = rng.randint(1, 9)
        base = rng.randint(0, 1000)
        totals = [base + rng.randint(0, 1) for _ in range(slots)]
        num_rows = rng.choice([0, 1, 2, rng.randint(0, 50), rng.randint(0, 5000)])
        before = list(totals)
        counts = coordinator.level_split(totals, num_rows)
        assert totals == before  # not modified
        assert len(counts) == slots
        assert all(c >= 0 for c in counts)
        assert sum(counts) == num_rows
        after = [t + c for t, c in zip(totals, counts)]
        assert max(after) - min(after) <= 1, (totals, num_rows, counts)


def test_level_split_repeated_chunks_stay_balanced_from_empty():
    rng = random.Random(99)
    for slots in range(1, 7):
        totals = [0] * slots
        fed = 0
        for _ in range(200):
            num_rows = rng.randint(0, 37)
            counts = coordinator.level_split(totals, num_rows)
            assert sum(counts) == num_rows
            totals = [t + c for t, c in zip(totals, counts)]
            fed += num_rows
            assert max(totals) - min(totals) <= 1
        assert sum(totals) == fed


def test_level_split_fills_the_emptiest_slots_first():
    assert coordinator.level_split([10, 0, 5], 5) == [0, 5, 0]
    counts = coordinator.level_split([10, 0, 5], 20)
    assert sum(counts) == 20
    after = [t + c for t, c in zip([10, 0, 5], counts)]
    assert max(after) - min(after) <= 1
    assert coordinator.level_split([], 5) == []
    assert coordinator.level_split([1, 2], 0) == [0, 0]


def test_coordinator_gives_a_retried_chunk_its_first_split_and_refuses_one_with_another_row_count():
    body = coordinator._Coordinator(2)
    key = ("feed1", 0, 3, 5)          # feed, epoch, partition 3, chunk 5
    first = body.assign("feed1", 0, key, 10)
    assert body.assign("feed1", 0, key, 10) == first      # a retried task that cut the same chunk
    with pytest.raises(BadInputError, match=r"partition 3 of epoch 0: a retried task cut chunk 5 with 9 rows "
                                            r"where its first attempt had 10.*deterministic"):
        body.assign("feed1", 0, key, 9)
    assert "partition 3" in body.bad_input_of("feed1")    # the driver fails the feed at once
    assert body.epoch_totals("feed1", 0) == [5, 5]        # the refused chunk added nothing


def test_feeding_tasks_are_one_per_core_beyond_the_cores_and_obey_the_option():
    from raytfnode.feed_tasks import feeding_tasks
    assert feeding_tasks(2, 2) == 2 and feeding_tasks(3, 8) == 3   # no more than the cores: one task each
    assert feeding_tasks(3, 2) == 2 and feeding_tasks(8, 2) == 2   # more: one task a core, in one wave
    assert feeding_tasks(400, 2) == 2 and feeding_tasks(400, 16) == 16
    assert feeding_tasks(400, 0) == 1                # no core count known: as if one
    assert feeding_tasks(400, 2, feed_tasks=0) == 400
    assert feeding_tasks(400, 2, feed_tasks=16) == 16 and feeding_tasks(10, 2, feed_tasks=16) == 10
    assert feeding_tasks(1, 2, feed_tasks=1) == 1 and feeding_tasks(0, 2) == 0


def test_feed_tasks_option_rejects_what_is_not_a_count():
    from raytfnode.errors import BadInputError
    from raytfnode.feed_tasks import check_feed_tasks
    assert check_feed_tasks(None) is None and check_feed_tasks(0) == 0 and check_feed_tasks(7) == 7
    for wrong in (-1, 1.5, "4", True):
        with pytest.raises(BadInputError, match="feed_tasks must be None"):
            check_feed_tasks(wrong)


def test_feeding_task_partitions_are_named_as_runs_or_lists():
    from raytfnode.feed_tasks import describe_partitions
    assert describe_partitions([7]) == "partition 7"
    assert describe_partitions(range(8, 16)) == "partitions 8-15"
    assert describe_partitions([0, 1, 5]) == "partitions 0, 1, 5"
    assert describe_partitions([0, 1, 5, 9, 13, 17, 21, 25]) == "partitions 0, 1, 5, 9, 13, 17, ... (8 partitions)"


def test_stored_shares_give_each_node_its_rows_of_each_piece_and_nothing_of_an_unfed_piece():
    from raytfnode.feeding import stored_shares
    run = stored.StoredRun([stored.StoredRows("a", 0, 4, 8.0), stored.StoredRows("b", 10, 16, 8.0)])
    chunks = [(("f", 0, 0, 0), stored.StoredRows("r", 0, 10, 8.0)), (("f", 0, 1, 0), run),
              (("f", 0, 2, 0), stored.StoredRows("s", 0, 5, 8.0))]
    shares = stored_shares(chunks, [[6, 4], [0, 10], None], 2)    # None: a node terminated the feed
    assert shares[0] == [(0, ("f", 0, 0, 0, 0), ["r", 0, 6], 6)]
    assert shares[1] == [(0, ("f", 0, 0, 0, 1), ["r", 6, 10], 4),
                         (1, ("f", 0, 1, 0, 1), [["a", "b"], [0, 10], [4, 16]], 10)]
    # a planned piece's counts end at its slot
    assert stored_shares(chunks[:1], [[10]], 2) == [[(0, ("f", 0, 0, 0, 0), ["r", 0, 10], 10)], []]


def test_run_collects_cycles_only_while_another_started_cluster_may_have_been_dropped():
    """``run()`` runs the cycle collector (a tenth of a second or more in a large driver) while its nodes
    wait to be placed only if another cluster it started is neither shut down nor collected yet."""
    import gc
    import weakref

    from raytfnode import cluster as cluster_module

    class Started:   # stands for a TFCluster: run() registers the finalizer that notes it dropped
        _finalizer = None

    launching, other = Started(), Started()
    before = set(cluster_module._open_clusters)
    cluster_module._open_clusters.clear()
    try:
        assert not cluster_module._droppable_cluster_exists(launching)
        other._finalizer = weakref.finalize(other, lambda: None)
        cluster_module._open_clusters.add(other._finalizer)
        assert cluster_module._droppable_cluster_exists(launching)
        launching._finalizer = weakref.finalize(launching, lambda: None)   # a restart: its own does not count
        cluster_module._open_clusters.add(launching._finalizer)
        other._cycle = other   # dropped in a reference cycle: only the collector frees it
        del other
        assert cluster_module._droppable_cluster_exists(launching)
        gc.collect()
        assert not cluster_module._droppable_cluster_exists(launching)
    finally:
        cluster_module._open_clusters.clear()
        cluster_module._open_clusters.update(before)
