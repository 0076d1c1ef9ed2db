"""The keras-alexnet-plot command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("plot", __name__)
