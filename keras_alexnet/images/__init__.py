"""Images from bytes to the model's input: headers, decoders, the evaluation crops.

One home for what predict, the server, evaluation and the data pipeline must do alike:

    headers.py    format, size and EXIF orientation from the first bytes; pixel and aspect limits
    decode.py     the Pillow + NumPy decoder (predict, the server) and bytes -> the model's crop
    decode_tf.py  the TensorFlow decoders of the data pipeline, upright by the same EXIF table
    crop.py       EvalTransform (the centre crop from Metadata) and its NumPy resize + crop
    crop_tf.py    shorter side, centre, ten and dense crops in TensorFlow ops for Dataset.map

Nothing is imported here. `headers` loads no third-party package, `decode` and `crop` never
load TensorFlow (the server imports them); `decode_tf` and `crop_tf` import it at the top.
Training's random crops, flips and PCA lighting are in `keras_alexnet.data.transforms`.
"""
