"""Everything ONNX: Keras -> ONNX conversion, graph rewrites, int8 quantisation, sessions.

`convert` turns a Keras model into an ONNX ModelProto, `graph` rewrites it for
onnxruntime without changing what it computes, `quantize` writes its int8 twin, and
`session` opens ONNX files for every reader (export checks, evaluation, predict, the
server) with one set of options and decodes the Metadata they carry. Importing the
package loads neither onnx nor onnxruntime.
"""
