"""Fault injection into dataset files in the real formats: every flipped byte and every
truncation is refused with a DatasetError (one line naming the file), never another exception,
and never loaded as data it is not. Through the CLI: nothing is created before the data is
verified, and the fixed files then work without --force.

Structure alone cannot see a flipped pixel value in an uncompressed file (raw IDX, CIFAR
batches): a copy of an official file is refused by its MD5 (simulated here by registering the
synthetic file's MD5 in the official table); a user's own file gets the structural checks only,
so such a flip loads as one changed pixel, which is what the unregistered runs allow.
"""

import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from l2o.cli import main
from l2o.data import DatasetError, write_idx
from l2o.data import cifar as cifar_module
from l2o.data.cifar import CIFAR_DATASETS, IMAGE_BYTES, read_binary_batch, read_python_batch
from l2o.data.idx import read_idx
from l2o.data.mnist import FILES, OFFICIAL_MD5
from l2o.errors import L2OError
from test_cifar import py2_pickle

pytestmark = pytest.mark.filterwarnings("error")  # also any exception raised in a destructor

RANDOM_FLIPS = 100
RANDOM_CUTS = 40
Arrays = tuple[np.ndarray, np.ndarray | None]


@dataclass
class Format:
    """A small file in one of the real formats, and how l2o reads it."""

    name: str  # the file's official name
    data: bytes
    read: Callable[[Path], Arrays]  # (images, labels or None)
    official: dict[tuple[str, int], str]  # the table the reader checks
    structure: list[int]  # the offsets outside the pixel values
    record: int = 0  # bytes per record of a headerless format


def _pixels(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size), dtype=np.uint8)


def _idx(compress: bool) -> Format:
    images = _pixels(np.random.default_rng(1), 8, 16).reshape(8, 4, 4)
    raw = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in images.shape)
    raw += images.tobytes()
    data = gzip.compress(raw, mtime=0) if compress else raw
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    table = OFFICIAL_MD5["mnist"]

    def read(path: Path) -> Arrays:
        return read_idx(path, ndim=3, official=table), None

    # gzip: every byte is structure (the CRC-32 checks the content); raw: the 16-byte header.
    return Format(name, data, read, table, list(range(len(data) if compress else 16)))


def _cifar_python() -> Format:
    info = CIFAR_DATASETS["cifar10"]
    x = _pixels(np.random.default_rng(2), 2, IMAGE_BYTES)
    batch = {"batch_label": "batch 1", "labels": [3, 9], "data": x, "filenames": ["a.png", "b"]}
    data = py2_pickle(batch)
    start = data.find(x.tobytes())
    structure = [i for i in range(len(data)) if not start <= i < start + x.size]
    return Format(
        "data_batch_1",
        data,
        lambda path: read_python_batch(path, info),
        cifar_module.OFFICIAL_MD5,
        structure,
    )


def _cifar_binary() -> Format:
    info = CIFAR_DATASETS["cifar100"]
    labels = np.array([[3, 57], [19, 0]], dtype=np.uint8)  # coarse, fine
    data = np.concatenate([labels, _pixels(np.random.default_rng(3), 2, IMAGE_BYTES)], 1)
    record = info.label_bytes + IMAGE_BYTES
    structure = [r * record + i for r in range(2) for i in range(info.label_bytes)]
    return Format(
        "train.bin",
        data.tobytes(),
        lambda path: read_binary_batch(path, info),
        cifar_module.OFFICIAL_MD5,
        structure,
        record,
    )


FORMATS = {
    "gzip IDX": lambda: _idx(True),
    "raw IDX": lambda: _idx(False),
    "CIFAR python": _cifar_python,
    "CIFAR binary": _cifar_binary,
}


@pytest.fixture(params=list(FORMATS))
def fmt(request) -> Format:
    return FORMATS[request.param]()


def _flip_offsets(fmt: Format) -> list[int]:
    """RANDOM_FLIPS random offsets (fixed seed) and every offset outside the pixel values."""
    rng = np.random.default_rng(0)
    random = rng.choice(len(fmt.data), min(RANDOM_FLIPS, len(fmt.data)), replace=False)
    return sorted({*random.tolist(), *fmt.structure})


def _flipped(data: bytes, offset: int) -> bytes:
    corrupt = bytearray(data)
    corrupt[offset] ^= 0xFF
    return bytes(corrupt)


def _refused(fmt: Format, path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as e:
        fmt.read(path)
    message = str(e.value)
    assert isinstance(e.value, L2OError) and str(path) in message and "\n" not in message
    return e.value


def test_every_flip_in_an_official_file_is_refused_by_its_md5(fmt, tmp_path, monkeypatch):
    path = tmp_path / fmt.name
    monkeypatch.setitem(fmt.official, (fmt.name, len(fmt.data)), hashlib.md5(fmt.data).hexdigest())
    path.write_bytes(fmt.data)
    fmt.read(path)  # the intact file is the official one
    offsets = _flip_offsets(fmt)
    assert len(offsets) >= RANDOM_FLIPS
    for offset in offsets:
        path.write_bytes(_flipped(fmt.data, offset))
        assert "is corrupt: md5 " in str(_refused(fmt, path)), offset


def test_a_flip_in_a_users_file_is_refused_or_changes_one_pixel_only(fmt, tmp_path):
    """Without a digest, a flip may go unseen only where it changes nothing that is read (a gzip
    header's mtime, a pickle's memo index or file names) or one pixel value: never a shape, a
    count or a label."""
    path = tmp_path / fmt.name
    path.write_bytes(fmt.data)
    images, labels = fmt.read(path)
    refused = 0
    for offset in _flip_offsets(fmt):
        path.write_bytes(_flipped(fmt.data, offset))
        try:
            got_images, got_labels = fmt.read(path)
        except DatasetError:
            refused += 1
            continue
        assert got_images.shape == images.shape, offset
        assert np.count_nonzero(got_images != images) <= 1, offset
        assert labels is None or np.array_equal(got_labels, labels), offset
    assert refused >= len(fmt.structure) // 2  # most flips in the structure break it


def test_every_truncation_is_refused(fmt, tmp_path):
    path = tmp_path / fmt.name
    rng = np.random.default_rng(0)
    lengths = {0, len(fmt.data) - 1, *rng.integers(0, len(fmt.data), RANDOM_CUTS).tolist()}
    if fmt.record:  # headerless records: a cut at a record boundary is a valid smaller file
        lengths = {n for n in lengths if n % fmt.record}
    for length in sorted(lengths):
        path.write_bytes(fmt.data[:length])
        _refused(fmt, path)


def test_an_absurd_idx_header_allocates_nothing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0e\x03" + b"\xff" * 12 + bytes(64))  # 3 x (2**32 - 1) doubles
    with pytest.raises(DatasetError, match=r"is truncated: shape \(4294967295, "):
        read_idx(path, ndim=3)


# -- through the CLI ---------------------------------------------------------------------------
def _fashion_format_dataset(directory: Path) -> None:
    """The four Fashion-MNIST files (raw IDX, 28 x 28 images), 16 + 8 examples."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        write_idx(directory / FILES[f"{split}_images"], _pixels(rng, n, 784).reshape(n, 28, 28))
        write_idx(directory / FILES[f"{split}_labels"], rng.integers(0, 10, n, dtype=np.uint8))


def test_cli_refuses_a_corrupt_file_before_creating_anything(tmp_path, capsys, monkeypatch):
    data, run = tmp_path / "data", tmp_path / "run"
    _fashion_format_dataset(data)
    images = data / FILES["train_images"]
    good = images.read_bytes()
    official = (images.name, len(good))
    monkeypatch.setitem(OFFICIAL_MD5["fashion-mnist"], official, hashlib.md5(good).hexdigest())
    images.write_bytes(_flipped(good, len(good) - 100))  # one pixel value
    argv = [
        "train", "--run-dir", str(run), "--quiet", "--data-dir", str(data),
        "--set", 'task.name="mnist"', "--set", 'task.dataset="fashion-mnist"',
        "--set", "task.hidden_sizes=[2]", "--set", "task.batch_size=4",
        "--set", "meta.epochs=2", "--set", "meta.horizon=4", "--set", "meta.truncation=2",
        "--set", "meta.validate_every=2", "--set", "meta.validation_tasks=1",
    ]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("l2o: error: "), lines
    assert f"{images} is corrupt: md5 " in lines[0]
    assert not run.exists()
    images.write_bytes(good)  # downloaded again: the same command now works, without --force
    assert main(argv) == 0
    assert (run / "checkpoints" / "best.safetensors").is_file()
