"""The keras-alexnet-filters command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("filters", __name__)
