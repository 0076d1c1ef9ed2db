"""The keras-alexnet-export-onnx command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("export_onnx", __name__)
