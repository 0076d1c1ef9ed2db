"""The keras-alexnet-compute-stats command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("compute_stats", __name__)
