"""The keras-alexnet-summary command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("summary", __name__)
