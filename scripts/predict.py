"""The keras-alexnet-predict command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("predict", __name__)
