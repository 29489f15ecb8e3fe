"""Every config field the trainer reads, with its default: the schema of an experiment.

An experiment file starts from :func:`get_config` and sets what it is about::

    def get_config():
        c = defaults.get_config()
        c.dataset.name = "mnist"
        c.model.name = "lenet5"
        ...
        return c

Derived values are ``FieldReference`` expressions, so they follow command-line overrides
(``--config.batch_size=256`` also scales ``optimizer.lr``).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The default config; ``dataset.name`` and ``model.name`` must be set by the experiment."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = config_dict.placeholder(str)  # a TFDS name, or "sklearn_digits"
    # TFDS split names, sliceable ("train[:55000]"). With a validation split, keep-best
    # and the "best" epoch are chosen on it; the test split is only reported.
    c.dataset.train_split = "train"
    c.dataset.validation_split = config_dict.placeholder(str)  # e.g. "train[55000:]"
    c.dataset.test_split = "test"
    c.dataset.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR, else TFDS's
    c.dataset.cache_dir = config_dict.placeholder(str)  # None: $CNNJAX_CACHE_DIR or ~/.cache
    # When the data is not prepared, let TFDS download and prepare it (needs network and
    # the `download` extra); False fails at once with advice instead.
    c.dataset.download = True
    c.dataset.placement = "auto"  # "device", "host" (streamed), or "auto" by size:
    c.dataset.max_device_bytes = 2**30  # "auto" keeps datasets up to this size on the device
    c.dataset.mean = 0.5  # normalisation of pixel intensities in [0, 1]
    c.dataset.std = 0.5
    c.dataset.pad = 0  # zero pixels added on every side of each image

    c.model = ml_collections.ConfigDict()
    c.model.name = config_dict.placeholder(str)  # a cnnjax.models.available() name
    c.model.kwargs = ml_collections.ConfigDict()  # passed to cnnjax.models.get(name, ...)
    # "classification" (logits vs labels: cross-entropy, accuracy) or "reconstruction"
    # (outputs vs inputs: squared error, PSNR); see cnnjax.training.tasks.
    c.task = "classification"

    # Compute dtype of the forward and backward passes: "float32", "bfloat16" or
    # "float16"; parameters and optimizer state stay float32, and float16 adds dynamic
    # loss scaling (cnnjax.training.precision).
    c.dtype = "float32"
    c.sharding = ml_collections.ConfigDict()
    # Parameters and optimizer state over the devices of the mesh's "data" axis:
    # "replicate" (each device holds them all) or "fsdp" (each large array split along
    # one dimension; cnnjax.training.sharding).
    c.sharding.params = "replicate"

    c.batch_size = 128
    c.eval_batch_size = 1000
    c.steps_per_call = 1  # train steps fused into one jitted call (same result, less overhead)
    # Each batch's gradient as this many independent parts, which XLA's CPU runtime runs
    # concurrently (see cnnjax.training.step.make_train_step); batch norm sees one part.
    c.microbatches = 1
    # Duration: exactly one of total_epochs / total_steps / total_examples.
    c.total_epochs = config_dict.FieldReference(10, field_type=int)
    c.total_steps = config_dict.placeholder(int)
    c.total_examples = config_dict.placeholder(int)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # "adam", "adamw" or "sgd"
    # The learning rate scales linearly with the batch size from base_lr at base_batch_size.
    c.optimizer.base_lr = 1e-3
    c.optimizer.base_batch_size = 128
    c.optimizer.lr = (
        c.optimizer.get_ref("base_lr")
        * c.get_ref("batch_size")
        / c.optimizer.get_ref("base_batch_size")
    )
    c.optimizer.b1 = 0.9  # adam, adamw
    c.optimizer.b2 = 0.999  # adam, adamw
    c.optimizer.eps = 1e-8  # adam, adamw
    c.optimizer.momentum = 0.9  # sgd
    c.optimizer.nesterov = False  # sgd
    c.optimizer.weight_decay = 0.0  # kernels only; L2 for adam/sgd, decoupled for adamw

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "cosine"  # "constant", "warmup", "cosine" or "onecycle"
    # Warm-up: at most one of warmup_steps / warmup_epochs / warmup_examples (none: 0).
    c.schedule.warmup_epochs = config_dict.placeholder(float)
    c.schedule.warmup_steps = config_dict.placeholder(int)
    c.schedule.warmup_examples = config_dict.placeholder(int)
    c.schedule.init_lr_fraction = 0.0  # lr at step 0, as a fraction of optimizer.lr
    c.schedule.final_lr_fraction = 0.0  # lr at the last step, as a fraction of optimizer.lr

    # A step whose loss, gradient norm or new parameters are not finite: "stop" ends the
    # run (nothing non-finite is saved; the last checkpoint stays the last good one),
    # "skip_step" skips its update and counts it (skipped_steps in metrics.jsonl).
    c.on_nonfinite = "stop"

    c.label_smoothing = 0.0
    c.augment = ml_collections.ConfigDict()
    c.augment.name = "none"  # "none" or "random_shift"
    c.augment.max_shift = 2  # random_shift: largest shift in pixels
    # Pass the test split once through the same augmentation (key augment.test_seed), so
    # that a model trained on distorted inputs is tested on distorted inputs.
    c.augment.distort_test = False
    c.augment.test_seed = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_epochs = 1
    # Also save every this many steps / minutes of wall time (None: only at epoch ends).
    c.checkpoint.every_steps = config_dict.placeholder(int)
    c.checkpoint.every_minutes = config_dict.placeholder(float)
    c.checkpoint.keep = 2  # the latest this many, plus the best with keep_best
    c.checkpoint.keep_best = True
    c.checkpoint.async_save = True

    # summary.json reports the seconds until the test metric first reaches target_<metric>.
    c.target_accuracy = 0.99
    c.target_psnr = config_dict.placeholder(float)  # dB, for task="reconstruction"
    return c


def _adam_onecycle(
    c: ml_collections.ConfigDict, *, epochs: int, warmup_epochs: float, max_shift: int
) -> None:
    """The small-image recipe: Adam peaking at 3e-3 with a one-cycle schedule (cosine
    warm-up from 4 % of the peak, cosine decay to 0.1 % of it), batch 128, random shifts."""
    c.batch_size = 128
    c.total_epochs = epochs
    c.optimizer.name = "adam"
    c.optimizer.base_lr = 3e-3
    c.schedule.name = "onecycle"
    c.schedule.warmup_epochs = warmup_epochs
    c.schedule.init_lr_fraction = 0.04
    c.schedule.final_lr_fraction = 1e-3
    c.augment.name = "random_shift"
    c.augment.max_shift = max_shift


def mnist_config() -> ml_collections.ConfigDict:
    """The defaults plus MNIST and the recipe tuned on ``mnist_lenet`` (12 epochs, 3 of
    warm-up, shifts of up to 2 pixels), shared by the MNIST experiments, which set their
    model and what they do differently."""
    c = get_config()
    c.dataset.name = "mnist"
    c.dataset.mean = 0.1307  # MNIST's pixel mean and std
    c.dataset.std = 0.3081
    _adam_onecycle(c, epochs=12, warmup_epochs=3.0, max_shift=2)
    c.target_accuracy = 0.99
    return c


def cifar10_config() -> ml_collections.ConfigDict:
    """The defaults plus CIFAR-10 and the same recipe, longer (30 epochs, 5 of warm-up,
    shifts of up to 4 pixels), shared by the CIFAR-10 experiments."""
    c = get_config()
    c.dataset.name = "cifar10"
    c.dataset.mean = 0.4734  # CIFAR-10's pixel mean and std over all channels
    c.dataset.std = 0.2516
    _adam_onecycle(c, epochs=30, warmup_epochs=5.0, max_shift=4)
    c.target_accuracy = 0.8
    return c
