"""The keras-alexnet-evaluate command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("evaluate", __name__)
