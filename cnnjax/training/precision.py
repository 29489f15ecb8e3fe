"""Mixed precision: the compute dtype of the train and eval steps.

Parameters, batch statistics and optimizer state are float32; each step casts them and
the inputs to ``config.dtype`` for the forward and backward passes.
"""

DTYPES = ("float32", "bfloat16", "float16")
