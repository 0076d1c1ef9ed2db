"""The keras-alexnet-serve command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("serve", __name__)
