"""CIFAR readers on small files written in both official formats: the Python 2 pickles (read
without running any code they name) and the binary records; layouts, corrupt files, labels."""

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from l2o.data import DatasetError
from l2o.data.cifar import (
    CIFAR_DATASETS,
    find_cifar,
    load_cifar,
    read_binary_batch,
    read_python_batch,
    safe_load,
)
from l2o.data.images import image_shape, load_images, num_classes
from l2o.tasks import ConvFamily

CIFAR10 = CIFAR_DATASETS["cifar10"]


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real files: str as BINSTRING (read back as
    bytes), numpy's reconstruct function under its old module name numpy.core.multiarray."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str
    dispatch[str] = save_str


def py2_pickle(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    old = b"cnumpy._core.multiarray\n_reconstruct\n"
    return f.getvalue().replace(old, b"cnumpy.core.multiarray\n_reconstruct\n")


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10_python(directory: Path, n=6, labels=None):
    """cifar-10-batches-py as in the real archive: 5 training batches and a test batch."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        x = _images(n, i)
        y = list(np.random.default_rng(100 + i).integers(0, 10, n)) if labels is None else labels
        y = [int(v) for v in y]
        batch = {
            "batch_label": f"batch {i}",
            "labels": y,
            "data": x,
            "filenames": [f"img_{i}_{k}.png" for k in range(n)],
        }
        (directory / name).write_bytes(py2_pickle(batch))
        written[name] = (x, np.array(y))
    return written


def write_cifar_binary(directory: Path, files, label_bytes, n=5):
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate(files):
        x = _images(n, 10 + i)
        high = [10] if label_bytes == 1 else [20, 100]  # CIFAR-100: coarse, then fine
        labels = np.random.default_rng(i).integers(0, high, (n, label_bytes))
        (directory / name).write_bytes(
            np.concatenate([labels.astype(np.uint8), x], axis=1).tobytes()
        )
        written[name] = (x, labels)
    return written


def test_python_batches_as_written_by_python_2_in_torchvisions_layout(tmp_path):
    written = write_cifar10_python(tmp_path / "cifar-10-batches-py")
    files = find_cifar("cifar10", tmp_path)  # torchvision: ROOT/cifar-10-batches-py
    assert files.format == "python" and len(files.train) == 5
    data = load_cifar("cifar10", tmp_path)
    train = [written[f"data_batch_{k}"] for k in range(1, 6)]
    assert torch.equal(data.train_images, torch.from_numpy(np.concatenate([x for x, _ in train])))
    assert torch.equal(data.train_labels, torch.from_numpy(np.concatenate([y for _, y in train])))
    assert torch.equal(data.test_images, torch.from_numpy(written["test_batch"][0]))
    assert data.train_labels.dtype == torch.int64 and data.num_classes == 10
    assert image_shape("cifar10") == (3, 32, 32) and num_classes("cifar100-coarse") == 20
    # The same through the dispatch by name, and found through $L2O_DATA with no data_dir.
    assert load_images("cifar10", tmp_path) is data


def test_found_through_l2o_data(tmp_path, monkeypatch):
    write_cifar10_python(tmp_path / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("L2O_DATA", str(tmp_path))
    assert find_cifar("cifar10").test == tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"


def test_python_3_pickles_with_bytes_or_str_keys_are_read_too(tmp_path):
    x = _images(4, 0)
    for data, labels, protocol in ((b"data", b"labels", 4), ("data", "labels", 5)):
        batch = {data: x, labels: [1, 2, 3, 9]}
        path = tmp_path / f"batch{protocol}"
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        images, labels = read_python_batch(path, CIFAR10)
        assert np.array_equal(images, x) and labels.tolist() == [1, 2, 3, 9]


def test_cifar100_python_fine_and_coarse_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x = _images(3, 1)
    for name in ("train", "test"):
        batch = {
            "data": x,
            "fine_labels": [0, 57, 99],
            "coarse_labels": [0, 11, 19],
            "filenames": [],
        }
        (d / name).write_bytes(py2_pickle(batch))
    fine, coarse = load_cifar("cifar100", tmp_path), load_cifar("cifar100-coarse", tmp_path)
    assert fine.train_labels.tolist() == [0, 57, 99] and fine.num_classes == 100
    assert coarse.test_labels.tolist() == [0, 11, 19] and coarse.num_classes == 20


def test_binary_batches_cifar10_and_cifar100(tmp_path):
    names = [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]
    written = write_cifar_binary(tmp_path / "cifar-10-batches-bin", names, 1)
    assert find_cifar("cifar10", tmp_path).format == "binary"
    data = load_cifar("cifar10", tmp_path)
    x, y = written["test_batch.bin"]
    assert torch.equal(data.test_images, torch.from_numpy(x))
    assert data.test_labels.tolist() == y[:, 0].tolist()
    assert data.train_images.shape == (25, 3072)
    written = write_cifar_binary(
        tmp_path / "c100" / "cifar-100-binary", ["train.bin", "test.bin"], 2
    )
    x, y = written["train.bin"]  # each record: coarse label, fine label, image
    fine = load_cifar("cifar100", tmp_path / "c100")
    coarse = load_cifar("cifar100-coarse", tmp_path / "c100")
    assert fine.train_labels.tolist() == y[:, 1].tolist()
    assert coarse.train_labels.tolist() == y[:, 0].tolist()
    assert torch.equal(fine.train_images, torch.from_numpy(x))


def test_python_format_is_preferred_when_both_are_present(tmp_path):
    write_cifar10_python(tmp_path / "cifar-10-batches-py")
    names = [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]
    write_cifar_binary(tmp_path / "cifar-10-batches-bin", names, 1)
    assert find_cifar("cifar10", tmp_path).format == "python"


def test_malicious_pickles_are_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    for i, payload in enumerate((Exploit(), Eval())):
        for protocol in (0, 2, 5):
            path = tmp_path / f"data_batch_{i}_{protocol}"
            path.write_bytes(pickle.dumps({"data": payload, "labels": [0]}, protocol=protocol))
            with pytest.raises(DatasetError, match=r"refused") as e:
                read_python_batch(path, CIFAR10)
            assert str(path) in str(e.value) and (
                "system" in str(e.value) or "eval" in str(e.value)
            )
    assert not marker.exists()
    # Python 3's protocol 2 encodes bytes through _codecs.encode: not numpy, so refused too.
    with pytest.raises(DatasetError, match=r"_codecs\.encode"):
        safe_load(pickle.dumps({b"data": b"x"}, protocol=2), "p")


def test_corrupt_and_invalid_files_name_the_file_and_the_problem(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(d)
    good = (d / "data_batch_3").read_bytes()
    (d / "data_batch_3").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a readable CIFAR pickle"):
        load_cifar("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle({"data": _images(2, 0), "labels": [3, 10]}))
    with pytest.raises(DatasetError, match=r"data_batch_3 \('labels'\): label 10 is outside 0..9"):
        load_cifar("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle({"data": _images(2, 0), "labels": [3]}))
    with pytest.raises(DatasetError, match="1 labels for 2 images"):
        load_cifar("cifar10", tmp_path)
    bad = np.zeros((2, 3072), dtype=np.float32)
    (d / "data_batch_3").write_bytes(py2_pickle({"data": bad, "labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"'data' is a float32 array of shape \(2, 3072\)"):
        load_cifar("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle({"fine_labels": [0], "data": _images(1, 0)}))
    with pytest.raises(DatasetError, match="has no 'labels' entry"):
        load_cifar("cifar10", tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"incomplete: missing data_batch_3"):
        find_cifar("cifar10", tmp_path)
    path = tmp_path / "b.bin"
    path.write_bytes(bytes(3073 * 2 + 100))
    with pytest.raises(DatasetError, match=r"b.bin is truncated or not a CIFAR binary batch"):
        read_binary_batch(path, CIFAR10)
    path.write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(DatasetError, match=r"label 12 is outside 0\.\.9"):
        read_binary_batch(path, CIFAR10)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(
        DatasetError, match=r"no CIFAR-10 files found \(looked in .*cifar-10-batches-py"
    ) as e:
        find_cifar("cifar10", tmp_path)
    assert "--data-dir" in str(e.value) and "cifar-10-batches-bin" in str(e.value)
    with pytest.raises(DatasetError, match="does not exist"):
        find_cifar("cifar10", tmp_path / "nope")
    with pytest.raises(ValueError, match="Invalid dataset: 'cifar9'"):
        find_cifar("cifar9")


def test_conv_family_runs_on_32x32x3_images_and_label_subsets(tmp_path):
    labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 7]
    write_cifar10_python(tmp_path / "cifar-10-batches-py", n=12, labels=labels)
    family = ConvFamily(
        dataset="cifar10", data_dir=str(tmp_path), channels=[4, 4], hidden_sizes=[8],
        batch_size=6, classes=[7, 3], num_problems=2,
    )  # fmt: skip
    task = family.sample(0)
    assert task.init_params()[0].shape == (2, 4, 3, 5, 5)  # conv0: 3 input channels
    assert task.init_params()[3].shape == (2, 4, 4, 5, 5)
    assert task.init_params()[6].shape == (2, 8, 4 * 8 * 8)  # fc0 after two 2x2 pools of 32x32
    assert task.init_params()[-2].shape == (2, 2, 8)  # two classes
    images, y = task.batch(0)
    assert images.shape == (2, 6, 3, 32, 32)
    raw = task.data.train_images[task.train_index]  # only images of labels 7 and 3
    assert set(task.data.train_labels[task.train_index].tolist()) == {3, 7}
    assert set(y.flatten().tolist()) <= {0, 1}  # 7 -> 0, 3 -> 1
    for k in range(2):
        for image, label in zip(images[k], y[k]):
            row = (image * 255).round().to(torch.uint8).reshape(-1)
            match = [i for i in range(len(raw)) if torch.equal(raw[i], row)]
            original = int(task.data.train_labels[task.train_index][match[0]])
            assert int(label) == {7: 0, 3: 1}[original]
    loss = task.loss(task.init_params(), task.batch(1))
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())
    metrics = task.evaluate(task.init_params(), buffers=task.init_buffers())
    assert metrics["accuracy"].shape == (2,)


def test_cifar100_checks_both_label_sets(tmp_path):
    fine = CIFAR_DATASETS["cifar100"]
    path = tmp_path / "train.bin"
    path.write_bytes(bytes([20, 5]) + bytes(3072))  # coarse label 20: no such superclass
    with pytest.raises(DatasetError, match=r"train.bin: label 20 is outside 0\.\.19"):
        read_binary_batch(path, fine)
    batch = {"data": _images(2, 0), "fine_labels": [1, 2], "coarse_labels": [0, 250]}
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DatasetError, match=r"\('coarse_labels'\): label 250 is outside 0\.\.19"):
        read_python_batch(path, fine)
    path.write_bytes(py2_pickle({"data": _images(2, 0), "fine_labels": [1, 99]}))
    assert read_python_batch(path, fine)[1].tolist() == [1, 99]  # a user's own: fine labels only


def test_a_numpy_dtype_with_flags_of_its_own_is_refused(tmp_path):
    """One flipped byte can set a dtype's flags to "holds object references": numpy would then
    take pixel bytes for pointers. Such a dtype is never built."""
    data = py2_pickle({"data": _images(1, 0), "labels": [1]})
    flags = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"  # elsize -1, alignment -1, flags 0
    assert data.count(flags) == 1
    path = tmp_path / "data_batch_1"
    path.write_bytes(data.replace(flags, flags[:-2] + b"\xfft"))
    with pytest.raises(DatasetError, match=r"data_batch_1 is not a plain CIFAR batch: a numpy"):
        read_python_batch(path, CIFAR10)
