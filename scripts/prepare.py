"""The keras-alexnet-prepare command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("prepare", __name__)
