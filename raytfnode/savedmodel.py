"""export_saved_model for TF1-style sessions and TF2 Keras models, from the documented signature dict.

Signature entries name tensors either by name (``'x:0'``, ``'x'``) or by the
tensor objects themselves, as TensorFlowOnSpark's examples pass them. A
signature without ``method_name`` gets its key as the method name, as in
TensorFlowOnSpark (``tf.saved_model.PREDICT_METHOD_NAME`` is
``'tensorflow/serving/predict'``; give it explicitly for TF Serving).
"""
import logging

from .errors import BadInputError

logger = logging.getLogger(__name__)


def _tensor_name(name):
    return name if ":" in name else name + ":0"


def _graph_tensor(graph, tensor):
    """The tensor of ``graph`` named by ``tensor`` (a name, or the tensor itself)."""
    if isinstance(tensor, str):
        return graph.get_tensor_by_name(_tensor_name(tensor))
    if getattr(tensor, "graph", None) is not graph:
        raise BadInputError("signature tensor {!r} is not of the session's graph; pass its name or a tensor of "
                         "sess.graph".format(tensor))
    return tensor


def _name_of(tensor):
    """A tensor's name: a string as it is, else its ``name`` (Keras tensors of a model's inputs/outputs)."""
    return tensor if isinstance(tensor, str) else getattr(tensor, "name", str(tensor))


def export(obj, export_dir, tag_set, signatures):
    """Exports ``obj`` (a ``tf.compat.v1.Session``, Keras model or ``tf.Module``) to ``export_dir``."""
    import tensorflow as tf

    if not isinstance(signatures, dict) or not signatures:
        raise BadInputError("signatures must be a non-empty dict {key: {'inputs': {...}, 'outputs': {...}}}")
    tags = [t.strip() for t in tag_set.split(",") if t.strip()] if isinstance(tag_set, str) else list(tag_set)
    if isinstance(obj, tf.compat.v1.Session):
        return _export_session(obj, export_dir, tags, signatures)
    if not hasattr(obj, "inputs"):
        raise BadInputError("export_saved_model takes a tf.compat.v1.Session or a Keras model, got {}; save a "
                         "tf.Module with tf.saved_model.save(module, export_dir, signatures=...)".format(
                             type(obj).__name__))
    return _export_tf2(obj, export_dir, tags, signatures)


def _export_session(sess, export_dir, tags, signatures):
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = sess.graph
    signature_def_map = {}
    for key, sig in signatures.items():
        inputs = {alias: v1.saved_model.utils.build_tensor_info(_graph_tensor(graph, tensor))
                  for alias, tensor in sig["inputs"].items()}
        outputs = {alias: v1.saved_model.utils.build_tensor_info(_graph_tensor(graph, tensor))
                   for alias, tensor in sig["outputs"].items()}
        method = sig.get("method_name", key)
        signature_def_map[key] = v1.saved_model.signature_def_utils.build_signature_def(
            inputs=inputs, outputs=outputs, method_name=method)
    if graph.finalized:
        graph._unsafe_unfinalize()   # a MonitoredTrainingSession finalizes its graph; the builder adds to it
    with graph.as_default():
        builder = v1.saved_model.builder.SavedModelBuilder(export_dir)
        builder.add_meta_graph_and_variables(sess, tags, signature_def_map=signature_def_map, clear_devices=True)
        builder.save()
    return export_dir


def _pick(candidates, name, what, alias):
    if len(candidates) == 1 and name not in candidates:
        return next(iter(candidates.values()))
    base = name.split(":")[0]
    for key, value in candidates.items():
        if key == name or key.split(":")[0] == base or key.split("/")[0] == base:
            return value
    raise BadInputError("signature {} {!r} names {!r}, which the model does not have; its {}s are {}".format(
        what, alias, name, what, sorted(candidates)))


def _export_tf2(model, export_dir, tags, signatures):
    import tensorflow as tf

    if tags != [tf.saved_model.SERVING]:
        logger.info("TF2 SavedModels are saved with the 'serve' tag; tag_set %s is recorded as 'serve'", tags)
    model_inputs = getattr(model, "inputs", None)
    if not model_inputs:
        raise BadInputError("export_saved_model needs a tf.compat.v1.Session or a built Keras model with named "
                         "inputs; build the model (call it once, or give it an Input layer) first")
    input_specs = {t.name: tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model_inputs}
    output_names = {t.name: i for i, t in enumerate(model.outputs)}
    functions = {}
    for key, sig in signatures.items():
        aliases = [(alias, _name_of(tensor)) for alias, tensor in sig["inputs"].items()]
        specs = [(alias, _pick(input_specs, name, "input", alias)) for alias, name in aliases]
        outputs = [(alias, _pick(output_names, _name_of(tensor), "output", alias))
                   for alias, tensor in sig["outputs"].items()]

        signature = [tf.TensorSpec(spec.shape, spec.dtype, name=alias) for alias, spec in specs]
        functions[key] = tf.function(_serving_fn(model, outputs), input_signature=signature).get_concrete_function()
    tf.saved_model.save(model, export_dir, signatures=functions)
    return export_dir


def _serving_fn(model, outputs):
    """The serving function of one signature (a closure: tf.function rejects extra keyword arguments)."""
    def serve(*args):
        values = model(list(args) if len(args) > 1 else args[0], training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        return {alias: values[index] for alias, index in outputs}
    return serve
