"""Image-classification datasets as decoded NumPy arrays.

``load(config.dataset)`` returns the train and test splits as ``uint8`` images
``(N, H, W, C)`` and ``int32`` labels ``(N,)``. Two kinds of source:

- **tensorflow-datasets by name** (``mnist``, ``fashion_mnist``, ``cifar10``, ...), read
  with ``tfds.data_source`` (no TensorFlow needed to read). The data directory is
  ``dataset.data_dir`` (``launch.py --data_dir``), else ``$TFDS_DATA_DIR``, else TFDS's
  default ``~/tensorflow_datasets``. Decoding tens of thousands of PNGs takes seconds, so
  the decoded arrays are cached once as ``CACHE/NAME/VERSION/SPLIT.npz`` (``CACHE`` is
  ``dataset.cache_dir``, else ``$CNNJAX_CACHE_DIR``, else ``~/.cache/cnnjax``) and later
  runs read the cache. When the dataset is not prepared and ``dataset.download`` is
  true (the default), TFDS downloads and prepares it in ``array_record`` format; that
  step needs TensorFlow (the ``download`` extra) and network. When the data can be
  neither found nor prepared, a :class:`DatasetUnavailableError` says where to point.
- **in-memory datasets** from installed packages, for tests and demos without any
  download: ``sklearn_digits`` (scikit-learn's 1,797 real 8x8 handwritten digits).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from cnnjax.training.errors import ConfigError, DatasetUnavailableError, did_you_mean

# Decode this many records per call of the data source, so that peak memory holds one
# chunk of Python objects rather than a whole split of them.
_DECODE_CHUNK = 10_000


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory.

    Attributes:
      images: ``(N, *spatial, C)`` uint8 (images; clips when distorted into clips).
      labels: ``(N,)`` int32.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits, an optional validation split, and the number of classes."""

    name: str
    train: Split
    test: Split
    num_classes: int
    validation: Split | None = None


def load(config: ml_collections.ConfigDict, *, lazy: bool = False) -> Dataset:
    """The dataset described by ``config`` (the experiment's ``config.dataset``).

    Reads ``name``, ``train_split``, ``validation_split``, ``test_split``, ``data_dir``,
    ``cache_dir`` and ``download``. Splits are TFDS split names with TFDS's slicing
    (``"train[:55000]"``, ``"train[90%:]"``); in-memory datasets accept the same forms.
    With ``lazy`` (each process of a multi-process run), a TFDS split's images and labels
    are :class:`DecodedOnRead`: a record is read and decoded only when it is indexed, so
    a process that indexes only its rows of each batch decodes only its share.
    """
    if config.name in IN_MEMORY:
        whole = IN_MEMORY[config.name]()
        named = {"train": whole.train, "test": whole.test}
        pick = lambda spec: _slice_split(named, spec)  # noqa: E731
        num_classes = whole.num_classes
    else:
        builder = _builder(config.name, config.data_dir)
        pick = lambda spec: _tfds_split(builder, spec, config, lazy=lazy)  # noqa: E731
        num_classes = builder.info.features[builder.info.supervised_keys[1]].num_classes
    validation = config.get("validation_split")
    return Dataset(
        name=config.name,
        train=pick(config.get("train_split", "train")),
        test=pick(config.get("test_split", "test")),
        num_classes=num_classes,
        validation=pick(validation) if validation else None,
    )


# ----------------------------------------------------------------------------- in memory


def sklearn_digits() -> Dataset:
    """scikit-learn's ``load_digits``: 1,797 real 8x8 handwritten digits (UCI), as uint8.

    Pixel values 0..16 are scaled to 0..255. The split is fixed: the first 1,437 images
    (80 %) train, the remaining 360 test.
    """
    from sklearn.datasets import load_digits  # test/demo dependency: imported on use only

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    n_train = int(0.8 * len(labels))
    return Dataset(
        name="sklearn_digits",
        train=Split(images[:n_train], labels[:n_train]),
        test=Split(images[n_train:], labels[n_train:]),
        num_classes=10,
    )


IN_MEMORY: dict[str, Callable[[], Dataset]] = {"sklearn_digits": sklearn_digits}


# ----------------------------------------------------------------------------- TFDS


class _OnDemand:
    """The records of a random-access ``source`` decoded into ``(images, labels)`` arrays
    for the keys asked for; the last answer is kept, since images and labels of the same
    rows are asked for one after the other."""

    def __init__(self, source, image_key: str, label_key: str):
        self._source, self._keys = source, (image_key, label_key)
        first = source[0]
        self.shapes = ((len(source), *np.shape(first[image_key])), (len(source),))
        self._last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None

    def read(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(*keys.shape, *image)`` uint8 and labels ``keys.shape`` int32."""
        if self._last is not None and np.array_equal(self._last[0], keys):
            return self._last[1]
        flat = keys.reshape(-1)
        unique, inverse = np.unique(flat, return_inverse=True)
        images = np.empty((len(unique), *self.shapes[0][1:]), np.uint8)
        labels = np.empty((len(unique),), np.int32)
        for start in range(0, len(unique), _DECODE_CHUNK):
            chunk = [int(k) for k in unique[start : start + _DECODE_CHUNK]]
            for i, record in enumerate(_records(self._source, chunk), start):
                images[i], labels[i] = record[self._keys[0]], record[self._keys[1]]
        if len(unique) < len(flat) or not np.array_equal(unique, flat):  # else: no copy
            images, labels = images[inverse], labels[inverse]
        out = images.reshape(*keys.shape, *images.shape[1:]), labels.reshape(keys.shape)
        self._last = (keys.copy(), out)
        return out


class DecodedOnRead:
    """The images (``column`` 0, uint8) or labels (1, int32) of a TFDS split, read and
    decoded from its source only where indexed (integer arrays, slices or ints), as a
    NumPy array would give them; ``np.asarray`` decodes the whole split."""

    def __init__(self, records: _OnDemand, column: int):
        self._records, self._column = records, column
        self.shape = records.shapes[column]
        self.dtype = np.dtype(np.uint8 if column == 0 else np.int32)
        self.ndim = len(self.shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        keys = np.arange(len(self))[index]
        return self._records.read(np.asarray(keys))[self._column]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def default_cache_dir() -> Path:
    """``$CNNJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnjax``, else ``~/.cache/cnnjax``."""
    if os.environ.get("CNNJAX_CACHE_DIR"):
        return Path(os.environ["CNNJAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnjax"


def _tfds_split(builder, split: str, config: ml_collections.ConfigDict, *, lazy: bool) -> Split:
    """One split of a TFDS dataset, decoded (from the cache when it holds it), or with
    ``lazy`` decoded on read."""
    image_key, label_key = builder.info.supervised_keys
    if lazy:
        records = _OnDemand(_data_source(builder, split, config), image_key, label_key)
        return Split(DecodedOnRead(records, 0), DecodedOnRead(records, 1))
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    path = cache_root / builder.info.name / str(builder.info.version) / f"{split}.npz"
    cached = _read_cache(path, _num_examples(builder, split))
    if cached is None:
        cached = _decode(_data_source(builder, split, config), image_key, label_key)
        _write_cache(path, cached)
    return cached


_SLICE = re.compile(r"^(\w+)\[(-?\d*%?):(-?\d*%?)\]$")


def _slice_split(splits: dict[str, Split], spec: str) -> Split:
    """``spec`` (``"train"``, ``"train[:1200]"``, ``"train[80%:]"``) of in-memory splits."""
    match = _SLICE.match(spec)
    name = match.group(1) if match else spec
    if name not in splits:
        raise ValueError(
            f"unknown split {spec!r}; splits are {', '.join(splits)}, optionally sliced as "
            "NAME[start:stop] with example counts or percentages"
        )
    split = splits[name]
    if not match:
        return split

    def bound(text: str) -> int | None:
        if not text:
            return None
        return round(int(text[:-1]) * len(split) / 100) if text.endswith("%") else int(text)

    keep = slice(bound(match.group(2)), bound(match.group(3)))
    return Split(split.images[keep], split.labels[keep])


def _builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = [*tfds.list_builders(with_community_datasets=False), *IN_MEMORY]
        raise ConfigError(
            f"unknown dataset {name!r}.{did_you_mean(name, known)} Use a tensorflow-datasets "
            f"name (see tfds.list_builders()) or one of: {', '.join(IN_MEMORY)}."
        ) from None


def _num_examples(builder, split: str) -> int | None:
    """The split's size from the prepared metadata, or None when it is not known."""
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        return None


def _data_source(builder, split: str, config: ml_collections.ConfigDict):
    """Random-access source of the split, preparing the dataset first when allowed."""
    if config.download and not builder.is_prepared():
        _download_and_prepare(builder)
    try:
        return builder.as_data_source(split=split)
    except (NotImplementedError, FileNotFoundError, KeyError, ValueError) as e:
        raise DatasetUnavailableError(
            f"dataset {builder.info.name!r} (version {builder.info.version}, split "
            f"{split!r}) is not prepared in {builder.data_dir_root!s} ({_first_line(e)}). "
            f"{_WHERE_TO_POINT} With network, --config.dataset.download=True prepares it "
            f"({_DOWNLOAD_NEEDS})."
        ) from None


_WHERE_TO_POINT = (
    "Point TFDS_DATA_DIR or --data_dir at a TFDS data directory that holds it in "
    "array_record format (e.g. `TFDS_DATA_DIR=../shared/tfds python launch.py ...`)."
)
_DOWNLOAD_NEEDS = (
    "preparing needs `pip install 'cnnjax[download]'`, which brings TensorFlow; reading "
    "prepared data does not"
)


def _download_and_prepare(builder) -> None:
    """Lets TFDS download and prepare the dataset, in array_record format (which
    ``tfds.data_source`` reads without TensorFlow)."""
    import tensorflow_datasets as tfds

    try:
        builder.download_and_prepare(file_format=tfds.core.FileFormat.ARRAY_RECORD)
    except Exception as e:  # whatever failed (network, missing TensorFlow), same advice
        if isinstance(e, ModuleNotFoundError):
            cause = f"it needs the module {e.name!r}: {_DOWNLOAD_NEEDS}"
        else:
            cause = f"{_first_line(e)}; is the network reachable?"
        raise DatasetUnavailableError(
            f"dataset {builder.info.name!r} is not prepared in {builder.data_dir_root!s} and "
            f"could not be downloaded and prepared ({cause}). {_WHERE_TO_POINT} To fail at "
            "once instead of trying to download, pass --config.dataset.download=False."
        ) from e


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _decode(source, image_key: str, label_key: str) -> Split:
    """Every record of ``source``, decoded into arrays, in record order."""
    return Split(*_OnDemand(source, image_key, label_key).read(np.arange(len(source))))


def _records(source, keys: list[int]) -> list:
    # ``__getitems__`` decodes a batch in one call; other sources (tfds.testing's mock)
    # may only implement per-record access.
    try:
        return source.__getitems__(list(keys))
    except (AttributeError, TypeError):
        return [source[k] for k in keys]


def _read_cache(path: Path, expected: int | None) -> Split | None:
    """The cached split, or None when absent or of the wrong size (then it is rebuilt)."""
    if not path.exists():
        return None
    with np.load(path) as f:
        split = Split(f["images"], f["labels"])
    if expected is not None and len(split) != expected:
        return None
    return split


def _write_cache(path: Path, split: Split) -> None:
    # Written under a temporary name and renamed, so an interrupted write never leaves a
    # truncated cache that a later run would trust.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, images=split.images, labels=split.labels)
    os.replace(tmp, path)
