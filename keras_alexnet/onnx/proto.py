"""Small edits of an ONNX ModelProto that several steps share: opset, tensor names, metadata.

Conversion renames the graph's input and output, export and int8 quantisation write the
Metadata into the metadata properties, export reads the opset it converted to. Importing
this module loads nothing beyond the standard library.
"""


def opset_version(proto):
    """The default-domain opset an ONNX ModelProto imports."""
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def rename(graph, old, new):
    """Rename tensor `old` to `new` everywhere in an ONNX graph."""
    if old == new:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def set_properties(model, props):
    """Replace the ONNX model's metadata_props by `props` (a str -> str dict)."""
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
