"""Datasets (TFDS through its mock, scikit-learn digits), the decode cache, and the feeds."""

from types import SimpleNamespace

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from cnnjax.training import data, feed
from cnnjax.training.data import DatasetUnavailableError, Split


def dataset_config(tmp_path, **fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "mnist",
            "train_split": "train",
            "test_split": "test",
            "data_dir": str(tmp_path / "tfds"),
            "cache_dir": str(tmp_path / "cache"),
            "download": False,
            **fields,
        }
    )


def test_sklearn_digits_are_the_real_digits_as_uint8():
    from sklearn.datasets import load_digits

    ds = data.load(ml_collections.ConfigDict({"name": "sklearn_digits"}))
    raw = load_digits()
    assert len(ds.train) + len(ds.test) == 1797
    assert ds.train.images.shape[1:] == (8, 8, 1) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int32
    # Pixel value v in 0..16 is stored as round(v * 255 / 16).
    i = len(ds.train) + 5
    expected = np.floor(raw.images[i] * 255 / 16 + 0.5)
    np.testing.assert_array_equal(ds.test.images[5, :, :, 0], expected)
    assert ds.test.labels[5] == raw.target[i]
    assert set(np.unique(ds.train.labels)) == set(range(10))


def test_tfds_dataset_is_decoded_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    config = dataset_config(tmp_path)
    with tfds.testing.mock_data(num_examples=24):
        first = data.load(config)
    assert first.num_classes == 10
    assert first.train.images.shape == (24, 28, 28, 1) and first.train.images.dtype == np.uint8
    assert first.train.labels.shape == (24,) and first.train.labels.max() < 10
    cache = tmp_path / "cache" / "mnist" / "3.0.1"
    assert sorted(p.name for p in cache.iterdir()) == ["test.npz", "train.npz"]

    # A second load must not touch the data source: make any such access fail.
    def no_source(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_data_source", no_source)
    second = data.load(config)
    np.testing.assert_array_equal(second.train.images, first.train.images)
    np.testing.assert_array_equal(second.test.labels, first.test.labels)


def test_lazy_splits_decode_only_the_records_indexed(tmp_path, monkeypatch):
    """What each process of a multi-process run loads: records are decoded only where
    indexed, and give what the fully decoded split holds there."""
    config = dataset_config(tmp_path)
    with tfds.testing.mock_data(num_examples=24):
        whole = data.load(config)
        decoded, records = [], data._records
        monkeypatch.setattr(
            data, "_records", lambda source, keys: decoded.extend(keys) or records(source, keys)
        )
        lazy = data.load(config, lazy=True)
        assert lazy.train.images.shape == whole.train.images.shape
        assert len(lazy.train) == 24 and decoded == []
        rows = np.array([[5, 2, 5], [23, 0, 7]])
        np.testing.assert_array_equal(lazy.train.images[rows], whole.train.images[rows])
        np.testing.assert_array_equal(lazy.train.labels[rows], whole.train.labels[rows])
        assert sorted(decoded) == [0, 2, 5, 7, 23]  # each once: labels came with the images
        np.testing.assert_array_equal(lazy.test.images[3:6], whole.test.images[3:6])
        np.testing.assert_array_equal(np.asarray(lazy.test.labels), whole.test.labels)


def test_missing_dataset_offline_says_where_to_point(tmp_path):
    (tmp_path / "tfds").mkdir()
    with pytest.raises(DatasetUnavailableError) as e:
        data.load(dataset_config(tmp_path))
    message = str(e.value)
    assert "TFDS_DATA_DIR" in message and "--data_dir" in message
    assert "download=True" in message
    assert not (tmp_path / "cache" / "mnist").exists()


def test_unknown_dataset_suggests_the_closest(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnistt'.*Did you mean 'mnist'"):
        data.load(dataset_config(tmp_path, name="mnistt"))


class FakeBuilder:
    """A TFDS builder that is not prepared until ``download_and_prepare`` runs."""

    def __init__(self, error: Exception | None = None):
        self.info = SimpleNamespace(
            name="fake",
            version="1.0.0",
            supervised_keys=("image", "label"),
            splits={},
            features={"label": SimpleNamespace(num_classes=3)},
        )
        self.data_dir_root = "/nowhere"
        self.prepared_as = None
        self.error = error

    def is_prepared(self) -> bool:
        return self.prepared_as is not None

    def download_and_prepare(self, *, file_format):
        if self.error:
            raise self.error
        self.prepared_as = file_format

    def as_data_source(self, split):
        if not self.is_prepared():
            raise NotImplementedError("Random access data source for file format TFRECORD")
        return [{"image": np.full((2, 2, 1), i, np.uint8), "label": i % 3} for i in range(5)]


@pytest.mark.parametrize("download", [True, False])
def test_download_prepares_array_record_only_when_allowed(tmp_path, monkeypatch, download):
    builder = FakeBuilder()
    monkeypatch.setattr(data, "_builder", lambda name, data_dir: builder)
    config = dataset_config(tmp_path, name="fake", download=download)
    if not download:
        with pytest.raises(DatasetUnavailableError, match="TFDS_DATA_DIR"):
            data.load(config)
        return
    ds = data.load(config)
    assert builder.prepared_as == tfds.core.FileFormat.ARRAY_RECORD  # readable without TF
    np.testing.assert_array_equal(ds.train.labels, [0, 1, 2, 0, 1])
    assert ds.num_classes == 3


def test_preparing_without_tensorflow_names_the_extra(tmp_path, monkeypatch):
    builder = FakeBuilder(
        error=ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    )
    monkeypatch.setattr(data, "_builder", lambda name, data_dir: builder)
    with pytest.raises(DatasetUnavailableError, match=r"'tensorflow'.*cnnjax\[download\]"):
        data.load(dataset_config(tmp_path, name="fake", download=True))


def _split(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8),
        rng.integers(0, 10, n).astype(np.int32),
    )


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def test_epoch_order_is_a_permutation_fixed_by_key_and_epoch():
    key = jax.random.key(3)
    a = np.asarray(feed.epoch_order(key, 0, num_examples=50))
    assert sorted(a) == list(range(50))
    np.testing.assert_array_equal(a, feed.epoch_order(key, 0, num_examples=50))
    assert not np.array_equal(a, feed.epoch_order(key, 1, num_examples=50))


def _batches(args, num_steps: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """What the train chunk trains on, from its feed arguments, written out in NumPy
    (``(num_steps * B, ...)``): gathered by ``order``, or the streamed batches."""
    images, labels, order, start = args
    images, labels = np.asarray(images), np.asarray(labels)
    if order is None:
        assert images.shape[:2] == labels.shape == (num_steps, batch_size)
        return images.reshape(-1, *images.shape[2:]), labels.reshape(-1)
    idx = np.asarray(order)[start * batch_size : (start + num_steps) * batch_size]
    return images[idx], labels[idx]


def test_resident_and_streamed_feeds_give_the_same_batches():
    split, b = _split(37), 4
    key = jax.random.key(0)
    feeds = [feed.TrainFeed(split, _mesh(), batch_size=b, resident=r) for r in (True, False)]
    assert feeds[0].steps_per_epoch == 9  # 37 // 4: the incomplete batch is left out
    for f in feeds:
        f.start_epoch(key, 2)
    order = np.asarray(feed.epoch_order(key, 2, num_examples=37))
    for start, n in [(0, 1), (3, 2), (8, 1)]:
        expected_idx = order[start * b : (start + n) * b]
        for f in feeds:
            images, labels = _batches(f.chunk(start, n), n, b)
            np.testing.assert_array_equal(images, split.images[expected_idx])
            np.testing.assert_array_equal(labels, split.labels[expected_idx])


@pytest.mark.parametrize("resident", [True, False])
def test_eval_feed_covers_every_test_example_once(resident):
    split = _split(23)
    f = feed.EvalFeed(split, _mesh(), eval_batch_size=6, resident=resident)
    images, labels = [], []
    for chunk_images, chunk_labels, num_valid in f.chunks():
        batches = chunk_images.shape[0]
        assert chunk_images.shape[1] == 6 and chunk_labels.shape == (batches, 6)
        assert batches * 6 - 6 < num_valid <= batches * 6  # padded to whole batches only
        images.append(np.asarray(chunk_images).reshape(-1, *split.images.shape[1:])[:num_valid])
        labels.append(np.asarray(chunk_labels).reshape(-1)[:num_valid])
    np.testing.assert_array_equal(np.concatenate(images), split.images)
    np.testing.assert_array_equal(np.concatenate(labels), split.labels)


def test_placement_switch():
    ds = data.Dataset("x", _split(10), _split(5), 10)
    size = ds.train.images.nbytes + ds.test.images.nbytes  # 15 images of 16 bytes
    assert feed.is_resident(ds, placement="auto", max_device_bytes=size)
    assert not feed.is_resident(ds, placement="auto", max_device_bytes=size - 1)
    assert feed.is_resident(ds, placement="device", max_device_bytes=0)
    assert not feed.is_resident(ds, placement="host", max_device_bytes=10**9)
    with pytest.raises(ValueError, match="placement"):
        feed.is_resident(ds, placement="gpu", max_device_bytes=0)
