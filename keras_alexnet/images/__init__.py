"""Images from bytes to the model's input: headers, decoders, the evaluation crop.

One home for what predict, the server, evaluation and the data pipeline must do alike:

    headers.py    format, size and EXIF orientation from the first bytes; pixel and aspect limits
    decode.py     Pillow + NumPy decoder (predict, the server) and bytes -> the model's crop
    crop.py       EvalTransform (the centre crop from Metadata) and its NumPy resize + crop

Nothing is imported here: `headers` loads no third-party package, `decode` loads Pillow but
never TensorFlow.
"""
