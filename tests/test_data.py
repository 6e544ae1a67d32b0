"""The IDX reader and dataset lookup: real file format, corrupt files, directory layouts."""

import gzip
import hashlib
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from l2o.data import DatasetError, find_dataset, load_dataset, read_idx, write_idx
from l2o.data import mnist as mnist_module
from l2o.data.images import load_images
from l2o.data.mnist import FILES, OFFICIAL_MD5, SYSTEM_ROOT
from l2o.tasks import MLPFamily

FASHION = SYSTEM_ROOT / "fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FASHION} (apt install dataset-fashion-mnist)",
)


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The IDX encoding written by hand from the format's definition (not by write_idx)."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_dataset(directory: Path, n_train=12, n_test=5, compress=True, labels=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels[:n]
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", y)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_files_in_the_real_format_raw_and_gzip(tmp_path, compress):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    data = _idx_bytes(images)
    path = tmp_path / ("x.gz" if compress else "x")
    path.write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_idx(path, ndim=3), images)
    # Big-endian multi-byte types are converted to native order.
    values = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "v").write_bytes(_idx_bytes(values, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "v"), values)
    # write_idx writes exactly the format.
    write_idx(tmp_path / "w", images)
    assert (tmp_path / "w").read_bytes() == data


def test_truncated_files_are_refused_naming_the_file(tmp_path):
    data = _idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=r"short is truncated: shape \(4, 28, 28\) needs 3136"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(data[:9])
    with pytest.raises(DatasetError, match="header is truncated"):
        read_idx(tmp_path / "header")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DatasetError, match="long is longer than its header says"):
        read_idx(tmp_path / "long")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(DatasetError, match=r"cut.gz is a truncated or corrupt gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_wrong_magic_number_and_dimensions_are_refused(tmp_path):
    data = bytearray(_idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8)))
    data[0] = 0x1A
    (tmp_path / "magic").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="magic is not an IDX file: magic number 0x1a000803"):
        read_idx(tmp_path / "magic")
    data[0], data[2] = 0, 0x07  # unknown type code
    (tmp_path / "type").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="type is not an IDX file"):
        read_idx(tmp_path / "type")
    (tmp_path / "labels").write_bytes(_idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8)))
    with pytest.raises(DatasetError, match="labels has 3 dimension"):
        read_idx(tmp_path / "labels", ndim=1)


def test_dataset_checks_counts_and_label_range(tmp_path):
    bad = np.array([0, 1, 2, 11, 3, 4, 5, 6, 7, 8, 9, 0], dtype=np.uint8)
    _write_dataset(tmp_path / "labels", labels=bad)
    with pytest.raises(
        DatasetError, match=r"train-labels-idx1-ubyte.gz has label 11, outside 0..9"
    ):
        load_dataset("mnist", tmp_path / "labels")
    _write_dataset(tmp_path / "count")
    write_idx(tmp_path / "count" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"holds 5 images but .* holds 4 labels"):
        load_dataset("mnist", tmp_path / "count")


@pytest.mark.parametrize(
    "layout", ["", "fashion-mnist", "FashionMNIST/raw", "fashion_mnist"], ids=repr
)
def test_finds_flat_named_and_torchvision_layouts(tmp_path, layout):
    _write_dataset(tmp_path / layout if layout else tmp_path, compress=layout != "fashion_mnist")
    files = find_dataset("fashion-mnist", tmp_path)
    assert files["train_images"].parent == (tmp_path / layout if layout else tmp_path)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.train_images.shape == (12, 784) and data.test_labels.shape == (5,)
    assert str(data.train_images.dtype) == "torch.uint8" and data.num_pixels == 784


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("L2O_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetError) as e:
        find_dataset("kmnist", tmp_path)
    message = str(e.value)
    assert f"looked in {tmp_path}, {tmp_path / 'kmnist'}" in message
    assert str(tmp_path / "KMNIST" / "raw") in message
    assert "--data-dir" in message and "L2O_DATA" in message and "--download" in message
    with pytest.raises(DatasetError, match=r"data directory .*nowhere does not exist"):
        find_dataset("fashion-mnist", tmp_path / "nowhere")
    missing = "mnist" if FASHION.is_dir() else "fashion-mnist"  # one this machine lacks
    with pytest.raises(DatasetError, match=rf"looked in .*env, .*env/{missing}.*dataset-fashion"):
        find_dataset(missing, None)
    _write_dataset(tmp_path / "part")
    (tmp_path / "part" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="incomplete: missing t10k-labels-idx1-ubyte"):
        find_dataset("mnist", tmp_path / "part")
    with pytest.raises(ValueError, match="Invalid dataset: 'cifar'"):
        find_dataset("cifar", tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed"
)
def test_download_without_torchvision_explains(tmp_path):
    from l2o.data import download_dataset

    with pytest.raises(DatasetError, match=r"--download needs torchvision \(pip install"):
        download_dataset("mnist", tmp_path)


@needs_fashion
def test_reads_the_real_fashion_mnist_files():
    data = load_dataset("fashion-mnist")
    assert data.directory == FASHION.resolve()
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert data.train_labels.bincount().tolist() == [6000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10
    assert 0 < float(data.train_images.float().mean()) < 255
    assert load_dataset("fashion-mnist") is data  # cached: sampling tasks costs nothing
    assert {p.name for p in find_dataset("fashion-mnist").values()} == {
        f"{stem}.gz" for stem in FILES.values()
    }


@needs_fashion
def test_the_installed_fashion_mnist_files_are_checked_against_the_official_md5():
    """Debian's copies differ from torchvision's only in the gzip header (no file name, another
    mtime): the table lists them, so the MD5 check runs on them, and they pass it."""
    table = OFFICIAL_MD5["fashion-mnist"]
    for path in find_dataset("fashion-mnist").values():
        data = path.read_bytes()
        assert table[(path.name, len(data))] == hashlib.md5(data).hexdigest()


def test_a_gz_file_is_read_rather_than_the_raw_one_beside_it(tmp_path):
    _write_dataset(tmp_path, compress=False)
    _write_dataset(tmp_path, compress=True)  # as torchvision's download leaves them
    assert {p.suffix for p in find_dataset("mnist", tmp_path).values()} == {".gz"}


def test_files_are_read_once_and_again_when_they_change(tmp_path, monkeypatch):
    _write_dataset(tmp_path)
    reads = []

    def counting_read_idx(path, **kwargs):
        reads.append(path)
        return read_idx(path, **kwargs)

    monkeypatch.setattr(mnist_module, "read_idx", counting_read_idx)
    family = MLPFamily(dataset="kmnist", data_dir=str(tmp_path))
    assert family.locate_data() == tmp_path.resolve()  # verified: read into the cache
    family.sample(0)
    family.sample(1)
    assert len(reads) == 4
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.full(5, 9, dtype=np.uint8))
    os.utime(labels, ns=(0, 0))  # a changed file, whatever the clock's resolution
    assert load_dataset("kmnist", tmp_path).test_labels.tolist() == [9] * 5
    assert len(reads) == 8


def test_images_of_another_size_are_refused_for_image_tasks(tmp_path):
    for split, n in (("train", 3), ("t10k", 2)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.zeros((n, 4, 4), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(n, dtype=np.uint8))
    assert load_dataset("mnist", tmp_path).num_pixels == 16  # an MLP takes any size
    with pytest.raises(DatasetError, match=r"have 16 pixels, expected 1 x 28 x 28 = 784 for mnist"):
        load_images("mnist", tmp_path)
