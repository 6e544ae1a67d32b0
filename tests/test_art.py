"""The neural art task (paper section 3.4): its losses against a hand computation, the VGG-19
loader on small weight files the tests write (and the files it must refuse), PNG/JPEG reading,
the ``l2o art`` command with hand-designed and learned optimizers, and a tiny meta-training run."""

import io
import json
import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from cli_errors import one_line_error
from l2o.art import image_size, stylise
from l2o.config import config_from_dict
from l2o.data.idx import DatasetError
from l2o.data.pictures import DEFAULT_CONTENT, list_images, read_image, write_image
from l2o.errors import InvalidInput
from l2o.evaluate import rollout
from l2o.optimizers import Adam
from l2o.runs import train
from l2o.tasks import ArtFamily, make_task_family
from l2o.tasks.art import content_loss, gram, style_loss, total_variation
from l2o.tasks.feature_nets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG19_CONVS,
    VGG19_LAYERS,
    find_vgg19,
    load_vgg19,
    random_net,
    random_vgg19,
)

SMALL_WIDTHS = (2, 2, 3, 3, 3)  # channels per VGG block: the layout of VGG-19, narrower


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save_picture(path, pixels: np.ndarray, **options) -> str:
    """Write uint8 pixels (H, W, 3) or (H, W) as PNG or JPEG (by the suffix) with Pillow."""
    Image.fromarray(pixels).save(path, **options)
    return str(path)


def photos(folder, count=3, shape=(20, 28), seed=0) -> str:
    """A folder of small random RGB photographs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        save_picture(folder / f"p{i}.png", rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return str(folder)


# -- the losses --------------------------------------------------------------------------------
def test_gram_content_style_and_tv_against_a_hand_computation():
    # features (1 image, 2 channels, 2 x 2): channel 0 = 1 2 / 3 4, channel 1 = 0 1 / 1 0
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])
    # G = F F^T / (h w): [[1+4+9+16, 0+2+3+0], [5, 0+1+1+0]] / 4
    assert torch.allclose(gram(f)[0], torch.tensor([[7.5, 1.25], [1.25, 0.5]]))
    target = torch.zeros_like(f)
    # mean of squares: (1 + 4 + 9 + 16 + 0 + 1 + 1 + 0) / 8 = 4
    assert content_loss(f, target).item() == pytest.approx(4.0)
    assert content_loss(f, target, 2.0).item() == pytest.approx(2.0)
    a = torch.tensor([[7.5, 1.25], [1.25, 1.5]])  # differs from G in one entry, by 1
    assert style_loss([gram(f)], [a], [1.0]).item() == pytest.approx(1 / 4)
    # two layers: the mean of (1/4) / 0.5 and 0
    assert style_loss([gram(f), gram(f)], [a, gram(f)[0]], [0.5, 1.0]).item() == pytest.approx(0.25)
    # tv of one 2 x 2 channel 0 1 / 2 4 (other channels flat): vertical (2^2 + 3^2) / 6,
    # horizontal (1^2 + 2^2) / 6, each a mean over 3 channels x 2 pairs
    image = torch.zeros(1, 3, 2, 2)
    image[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    assert total_variation(image).item() == pytest.approx((4 + 9) / 6 + (1 + 4) / 6)


@pytest.mark.parametrize("normalise", [True, False])
def test_the_task_loss_is_the_weighted_sum_computed_by_hand(tmp_path, normalise):
    """f on a 3 x 3 image with a one-scale random net of 1 x 1 filters, computed with numpy."""
    rng = np.random.default_rng(1)
    style_pixels = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    style = save_picture(tmp_path / "style.png", style_pixels)
    family = ArtFamily(
        size=3, style=style, random_scales=1, random_kernel=1, random_channels=2,
        content_weight=0.7, style_weight=1.3, tv_weight=0.4, normalise=normalise,
    )  # fmt: skip
    content = torch.rand(1, 3, 3, 3, dtype=torch.float64)
    task = family.make_task(content, seed=0, dtype=torch.float64)
    image = torch.rand(1, 3, 3, 3, dtype=torch.float64)

    w = random_net(0, channels=2, kernel=1, scales=1).ops[0][2][:, :, 0, 0].double().numpy()
    mean, std = np.array(IMAGENET_MEAN)[:, None], np.array(IMAGENET_STD)[:, None]

    def features(x):  # x (3, 3, 3) -> (2, 9): ReLU(W (x - mean) / std) at every pixel
        return np.maximum(w @ ((x.reshape(3, 9) - mean) / std), 0)

    def gram_np(x):
        f = features(x)
        return f @ f.T / 9

    x, c = image[0].numpy(), content[0].numpy()
    s = style_pixels.transpose(2, 0, 1) / 255
    content_term = np.mean((features(x) - features(c)) ** 2)
    style_term = np.mean((gram_np(x) - gram_np(s)) ** 2)
    if normalise:
        content_term /= np.mean(features(c) ** 2)
        style_term /= np.mean(gram_np(s) ** 2)
    tv = np.mean((x[:, 1:] - x[:, :-1]) ** 2) + np.mean((x[:, :, 1:] - x[:, :, :-1]) ** 2)
    expected = 0.7 * content_term + 1.3 * style_term + 0.4 * tv
    # the style picture is read in float32: its pixels k / 255 differ from float64's in the 8th digit
    assert task.loss([image]).item() == pytest.approx(expected, rel=1e-6)


def test_the_random_net_is_seeded_and_multi_scale():
    a, b, other = random_net(0), random_net(0), random_net(1)
    assert all(torch.equal(x[2], y[2]) for x, y in zip(a.ops, b.ops))
    assert not torch.equal(a.ops[0][2], other.ops[0][2])
    found = a.features(torch.rand(2, 3, 64, 48), a.layers)
    assert [tuple(found[f"scale{s}"].shape) for s in range(4)] == [
        (2, 32, 64 // 2**s, 48 // 2**s) for s in range(4)
    ]


def test_the_random_vgg19_is_seeded_he_initialised_and_runs_in_the_task():
    a, b, other = random_vgg19(0), random_vgg19(0), random_vgg19(1, (2, 2, 3, 3, 3))
    convs = [op for op in a.ops if op[0] == "conv"]
    assert a.layers == list(VGG19_LAYERS) and len(convs) == 16
    assert [op[2].shape[0] for op in convs] == [16] * 2 + [32] * 2 + [64] * 12
    assert all(
        torch.equal(x[2], y[2]) for x, y in zip(convs, (op for op in b.ops if op[0] == "conv"))
    )
    assert [op[2].shape[0] for op in other.ops if op[0] == "conv"][:5] == [2, 2, 2, 2, 3]
    for op in convs:  # N(0, 2 / fan_in), zero biases
        fan_in = op[2][0].numel()
        assert abs(float(op[2].std()) - (2 / fan_in) ** 0.5) < 0.15 * (2 / fan_in) ** 0.5
        assert not op[3].any()
    assert "random filters, seed 0" in a.description
    family = make_task_family("art", network="random-vgg19", size=32, random_widths=[2, 2, 3, 3, 3])
    task = family.sample(0)
    assert task.loss(task.init_params()).shape == (1,)
    assert family.to_config()["random_widths"] == [2, 2, 3, 3, 3]


# -- VGG-19 ------------------------------------------------------------------------------------
def small_vgg19(seed=0) -> nn.Sequential:
    """torchvision's vgg19().features, layer for layer, with SMALL_WIDTHS channels."""
    torch.manual_seed(seed)
    layers, channels = [], 3
    for width, convs in zip(SMALL_WIDTHS, (2, 2, 4, 4, 4)):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def vgg_state(features: nn.Sequential) -> dict:
    """The state dict of a whole torchvision VGG: features.* and a classifier to ignore."""
    state = OrderedDict((f"features.{k}", v) for k, v in features.state_dict().items())
    state["classifier.0.weight"] = torch.randn(4, 3)
    return state


def test_vgg19_loads_torchvision_names_from_a_state_dict_and_safetensors(tmp_path):
    net = small_vgg19()
    torch.save(vgg_state(net), tmp_path / "vgg19-small.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "v.safetensors")
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    for path in (tmp_path / "vgg19-small.pth", tmp_path / "v.safetensors"):
        vgg = load_vgg19(path)
        assert vgg.kind == "vgg19" and vgg.layers == list(VGG19_LAYERS)
        assert [op[2].shape for op in vgg.ops if op[0] == "conv"] == [
            m.weight.shape for m in net if isinstance(m, nn.Conv2d)
        ]
        assert "widths [2, 2, 2, 2, 3, 3, 3, 3" in vgg.description
        for name in ("conv1_1", "relu3_4", "pool4", "relu4_2", "relu5_1"):
            expected = net[: VGG19_LAYERS[name] + 1](normalised.clone())
            assert torch.allclose(vgg.features(x, [name])[name], expected, atol=1e-6), name
    assert VGG19_CONVS[-1] == 34 and VGG19_LAYERS["pool5"] == 36  # torchvision's indices


def test_the_art_task_runs_on_vgg19_weights_found_in_l2o_data(tmp_path, monkeypatch):
    torch.save(vgg_state(small_vgg19()), tmp_path / "vgg19-mine.pth")
    monkeypatch.setenv("L2O_DATA", str(tmp_path))
    assert find_vgg19() == tmp_path / "vgg19-mine.pth"
    family = ArtFamily(size=16, network="vgg19", content_dir=photos(tmp_path / "photos"))
    task = family.sample(0)
    assert task.content_layer == "relu4_2" and task.style_layers[-1] == "relu5_1"
    result = rollout(Adam(lr=0.05), task, 3)
    assert torch.isfinite(result.losses).all() and result.losses[-1] < result.losses[0]


def test_vgg19_weights_are_found_in_torch_hubs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("L2O_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DatasetError, match="no VGG-19 weights file") as missing:
        find_vgg19()
    assert "\n" not in str(missing.value)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg_state(small_vgg19()), tmp_path / "hub" / "checkpoints" / "vgg19-x.pth")
    assert find_vgg19().name == "vgg19-x.pth"


class NotATensor:
    pass


def _refusals(tmp_path):
    good = vgg_state(small_vgg19())
    missing = OrderedDict((k, v) for k, v in good.items() if not k.startswith("features.28."))
    wrong = OrderedDict(good)
    wrong["features.5.weight"] = torch.randn(3, 3, 3, 3)  # conv2_1 must take conv1_2's 2
    nested = {"weights": good, "other": NotATensor()}
    cases = {"missing.pth": missing, "wrong.pth": wrong, "object.pth": nested}
    for name, state in cases.items():
        torch.save(state, tmp_path / name)
    (tmp_path / "noise.pth").write_bytes(b"\x00\x01not a zip nor a pickle" * 10)
    (tmp_path / "noise.safetensors").write_bytes(b"\xff" * 64)
    torch.save(good, tmp_path / "vgg19-00000000.pth")  # the torch hub name of another file
    return {
        "missing.pth": "features.28.weight is missing",
        "wrong.pth": "features.5.weight has shape (3, 3, 3, 3)",
        "object.pth": "not a torch state dict file",
        "noise.pth": "not a torch state dict file",
        "noise.safetensors": "not a safetensors file",
        "vgg19-00000000.pth": "is corrupt: its sha256",
    }


def test_wrong_weight_files_are_refused_in_one_line_and_nothing_is_unpickled(tmp_path):
    for name, message in _refusals(tmp_path).items():
        with pytest.raises(DatasetError, match=re.escape(message)) as refused:
            load_vgg19(tmp_path / name)
        assert "\n" not in str(refused.value) and str(tmp_path / name) in str(refused.value)
    # a pickle that would run code when unpickled is refused by weights_only, never run
    evil, target = tmp_path / "evil.pth", tmp_path / "pwned"
    evil.write_bytes(pickle.dumps(Touch(target)))
    with pytest.raises(DatasetError, match="not a torch state dict"):
        load_vgg19(evil)
    assert not target.exists()
    pickle.loads(evil.read_bytes())  # what plain unpickling would have done
    assert target.exists()


class Touch:
    """Unpickled, it creates the file ``target``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.target,))


def test_the_art_command_refuses_a_bad_weights_file_in_one_line(tmp_path, capsys):
    _refusals(tmp_path)
    content = save_picture(tmp_path / "c.png", np.zeros((8, 8, 3), np.uint8))
    line = one_line_error(
        capsys,
        ["art", "--content", content, "--weights", str(tmp_path / "wrong.pth"),
         "--out", str(tmp_path / "out.png")],
    )  # fmt: skip
    assert "not a VGG-19 state dict" in line
    assert not (tmp_path / "out.png").exists()


# -- pictures ----------------------------------------------------------------------------------
def test_png_and_jpeg_files_are_read_as_rgb_in_0_1(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.zeros((5, 7, 1), np.uint8)], axis=2)  # fully transparent
    png = read_image(save_picture(tmp_path / "a.png", rgb))
    assert png.shape == (3, 5, 7) and png.dtype == torch.float32
    assert torch.equal(png, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert torch.equal(read_image(save_picture(tmp_path / "g.PNG", grey))[1] * 255,
                       torch.from_numpy(grey).float())  # fmt: skip
    assert torch.equal(read_image(save_picture(tmp_path / "t.png", rgba)), torch.ones(3, 5, 7))
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    jpeg = read_image(save_picture(tmp_path / "s.jpg", smooth, quality=95))
    assert jpeg.shape == (3, 16, 16)
    assert (jpeg - torch.from_numpy(smooth).permute(2, 0, 1) / 255).abs().max() < 0.05
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "g.PNG", "s.jpg", "t.png"]
    out = write_image(tmp_path / "out" / "w.png", png)
    assert torch.equal(read_image(out), png)


def test_bad_picture_files_are_one_line_errors(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data, format="PNG")
    (tmp_path / "truncated.png").write_bytes(data.getvalue()[:60])
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a picture" * 20)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.gif")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(jpeg, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    cases = {
        "truncated.png": "truncated or corrupt",
        "cut.jpg": "truncated or corrupt",
        "garbage.jpg": "not a PNG or JPEG image",
        "a.gif": "is a GIF image; only PNG and JPEG",
        "missing.png": "cannot read",
    }
    for name, message in cases.items():
        with pytest.raises(DatasetError, match=message) as bad:
            read_image(tmp_path / name)
        assert "\n" not in str(bad.value) and name in str(bad.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no PNG or JPEG"):
        list_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="is not a directory"):
        list_images(tmp_path / "missing")


# -- the family --------------------------------------------------------------------------------
def test_tasks_are_deterministic_and_the_default_photographs_are_split(tmp_path):
    family = ArtFamily(size=(16, 24), num_problems=2)
    a, b, c = family.sample(3), family.sample(3), family.sample(4)
    assert a.content.shape == a.image0.shape == (2, 3, 16, 24)
    assert torch.equal(a.content, b.content) and torch.equal(a.image0, b.image0)
    assert not torch.equal(a.content, c.content)
    assert a.loss(a.init_params()).shape == (2,)
    splits = [set(DEFAULT_CONTENT[s]) for s in ("train", "validation", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    held_out = ArtFamily(size=16, content_split="test")
    assert {p.name for p in held_out.content_files()} == {"china.jpg", "flower.jpg"}
    assert (
        ArtFamily(init="content", init_noise=0.0)
        .sample(0)
        .image0.equal(ArtFamily(init="content", init_noise=0.0).sample(0).content)
    )


def test_a_content_folder_with_split_subfolders(tmp_path):
    photos(tmp_path / "c" / "train", 2, seed=1)
    photos(tmp_path / "c" / "test", 1, seed=2)
    test = ArtFamily(size=8, content_dir=str(tmp_path / "c"), content_split="test")
    assert [p.parent.name for p in test.content_files()] == ["test"]
    flat = ArtFamily(size=8, content_dir=photos(tmp_path / "flat", 2), content_split="test")
    assert len(flat.content_files()) == 2  # no subfolders: every split uses them all
    centred = ArtFamily(size=(10, 14), content_dir=str(tmp_path / "flat"), augment=False)
    assert centred.crop(torch.rand(3, 20, 28), torch.Generator()).shape == (3, 10, 14)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"size": 0}, "Invalid size"),
        ({"size": [8, 8, 8]}, "Invalid size"),
        ({"network": "alexnet"}, "Invalid network"),
        ({"content_layer": "relu4_2"}, "is not a layer of random"),
        ({"style_layers": ["scale9"]}, "is not a layer of random"),
        ({"weights": "v.pth"}, 'is for network = "vgg19"'),
        ({"size": 4}, "layer scale3 of the random net sees the image shrunk 8 times"),
        ({"init": "zeros"}, "Invalid init"),
        ({"crop_min": 0}, "Invalid crop_min"),
        ({"random_kernel": 4}, "must be odd"),
        ({"network": "random-vgg19", "random_widths": [4, 4]}, "Invalid random_widths"),
        ({"network": "random-vgg19", "size": 8}, "layer relu5_1 of the vgg19 net sees the image"),
        ({"network": "random-vgg19", "weights": "v.pth"}, 'is for network = "vgg19"'),
        ({"style": ""}, "Invalid style"),
        ({"content_split": "all"}, "Invalid content_split"),
    ],
)
def test_invalid_options_are_one_line_errors(options, message):
    with pytest.raises(InvalidInput, match=message) as bad:
        make_task_family("art", **options)
    assert "\n" not in str(bad.value)


# -- stylising -----------------------------------------------------------------------------------
def test_stylise_from_python_with_a_tensor_and_any_optimizer(tmp_path):
    style = save_picture(tmp_path / "s.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3),
                                                                               dtype=np.uint8))  # fmt: skip
    content = torch.rand(3, 12, 20)
    result = stylise(content, style, "adam", steps=6, size=16, lr=0.05, init="content")
    assert result.image.shape == (3, 10, 16) and result.losses.shape == (7,)
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.losses[-1] < result.losses[0] and result.optimizer == "adam (lr 0.05)"
    assert "random multi-scale net" in result.network and set(result.terms) == {
        "content",
        "style",
        "tv",
    }
    assert image_size((300, 451), None) == (170, 256)  # 256 on the longer side: 300 x 256 / 451
    with pytest.raises(InvalidInput, match="unknown art task option"):
        stylise(content, style, steps=1, colour=True)
    with pytest.raises(InvalidInput, match="lr is for a hand-designed optimizer"):
        stylise(content, style, "quadratic-lstm", steps=1, lr=0.1)


def test_the_art_command_with_hand_designed_and_learned_optimizers(tmp_path, capsys):
    from l2o.cli import main

    rng = np.random.default_rng(0)
    content = save_picture(tmp_path / "photo.jpg", rng.integers(0, 256, (24, 32, 3), np.uint8))
    style = save_picture(tmp_path / "painting.png", rng.integers(0, 256, (20, 20, 3), np.uint8))
    for optimizer, out in (("rmsprop", "a.png"), ("quadratic-lstm", "b.jpg")):
        argv = ["art", "--content", content, "--style", style, "--optimizer", optimizer,
                "--steps", "4", "--size", "16", "--out", str(tmp_path / out)]  # fmt: skip
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert f"wrote {tmp_path / out} (12 x 16 pixels)" in printed and optimizer in printed
        assert read_image(tmp_path / out).shape == (3, 12, 16)
    before = (tmp_path / "a.png").read_bytes()
    argv = ["art", "--content", content, "--style", style, "--out", str(tmp_path / "a.png")]
    assert "exists; use --force" in one_line_error(capsys, argv)
    assert (tmp_path / "a.png").read_bytes() == before
    assert main([*argv, "--force", "--steps", "2", "--size", "8x8", "--quiet"]) == 0
    assert read_image(tmp_path / "a.png").shape == (3, 8, 8)
    argv = ["art", "--content", content, "--style", style, "--force", "--out", content]
    assert "it is an input" in one_line_error(capsys, argv)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    refusals = {
        "or a corrupt one": ["--content", str(tmp_path / "broken.png")],
        "suffix '.gif'": ["--content", content, "--out", str(tmp_path / "x.gif")],
        "Invalid --size": ["--content", content, "--size", "big"],
        "only task.* may be set": ["--content", content, "--set", "meta.epochs=1"],
        "unknown sample image": ["--content", content, "--style", "skimage/nothing"],
        "no checkpoint or pretrained optimizer": ["--content", content, "--optimizer", "zz"],
    }
    for message, args in refusals.items():
        out = [] if "--out" in args else ["--out", str(tmp_path / "new.png")]
        assert message in one_line_error(capsys, ["art", *args, *out]), message
    assert not (tmp_path / "new.png").exists()


# -- meta-training ---------------------------------------------------------------------------------
def test_a_tiny_meta_training_run_of_the_art_family(tmp_path):
    config = config_from_dict(
        {
            "task": {
                "name": "art",
                "size": 12,
                "content_dir": photos(tmp_path / "photos"),
                "random_channels": 8,
                "num_problems": 2,
            },
            "optimizer": {"hidden_size": 8, "preprocess": "log_sign"},
            "meta": {
                "epochs": 2,
                "horizon": 8,
                "truncation": 4,
                "validate_every": 2,
                "validation_tasks": 1,
                "meta_loss": "relative",
            },
        }
    )
    state = train(config, tmp_path / "run", quiet=True, tensorboard=False)
    assert state.epoch == 2 and np.isfinite(state.best_validation)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(rows) == 2 and all(np.isfinite(r["meta_loss"]) for r in rows)
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()
    result = stylise(torch.rand(3, 12, 12), "skimage/ihc", tmp_path / "run", steps=3)
    assert result.losses.shape == (4,) and torch.isfinite(result.losses).all()


def test_a_bad_content_file_stops_training_before_anything_is_written(tmp_path, capsys):
    folder = photos(tmp_path / "photos", 2)
    (tmp_path / "photos" / "zz.jpg").write_bytes(b"not a jpeg")
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--set", 'task.name="art"',
            "--set", f'task.content_dir="{folder}"', "--set", "meta.epochs=1"]  # fmt: skip
    line = one_line_error(capsys, argv)
    assert "zz.jpg" in line and "not a PNG or JPEG" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_art_task_on_cuda_matches_the_cpu():
    family = ArtFamily(size=32, content_split="test", num_problems=2)
    cpu, gpu = family.sample(5), family.sample(5, device="cuda")
    assert gpu.image0.is_cuda and gpu.style_targets[0].is_cuda
    on_cpu = rollout(Adam(lr=0.05), cpu, 10).losses
    on_gpu = rollout(Adam(lr=0.05).to("cuda"), gpu, 10).losses
    assert torch.allclose(on_cpu, on_gpu, rtol=1e-3)
