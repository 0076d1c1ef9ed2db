"""The keras-alexnet-export-savedmodel command, run from a checkout."""

from keras_alexnet.commands import script

get_args_parser, main = script("export_savedmodel", __name__)
