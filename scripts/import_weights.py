"""The keras-alexnet-import-weights command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("import_weights", __name__)
