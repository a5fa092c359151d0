"""Turning a Spark job failure back into the raytfnode error that caused it."""
import re

from .. import errors

_ERROR = re.compile(r"(?:raytfnode\.errors\.)?(NodeError|FeedTimeoutError|BadInputError|FeedError|"
                    r"ClusterStoppedError|ShutdownTimeoutError): (.*)")


def unwrap(exc):
    """Returns the raytfnode error named in a Spark (Py4J) exception's text, or ``exc`` itself.

    Spark wraps a Python worker's exception in a Java exception whose message
    holds the Python traceback; the raytfnode error in it is the one to show.
    """
    text = str(exc)
    match = _ERROR.search(text)
    if match is None:
        return exc
    name, first_line = match.group(1), match.group(2)
    tail = text[match.end():]
    lines = [first_line]
    for line in tail.splitlines()[1:]:
        if line.startswith(("\tat ", "org.apache", "Caused by", "py4j", "\tat")) or "JavaError" in line:
            break
        lines.append(line)
    message = "\n".join(lines).rstrip()
    cls = getattr(errors, name)
    if cls is errors.NodeError:
        node = re.match(r"TF node (\w+):(\d+) failed: (.*)", message, re.S)
        if node:
            return errors.NodeError(node.group(1), int(node.group(2)), node.group(3))
        return errors.FeedError(message)
    return cls(message)
