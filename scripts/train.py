"""The keras-alexnet-train command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("train", __name__)
