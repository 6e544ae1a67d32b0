"""Pictures for the neural art task (``l2o.tasks.art``): PNG and JPEG files read and written
with Pillow, and the sample photographs that installable packages ship.

``read_image(path)`` gives a float tensor (3, H, W) in [0, 1] (greyscale is repeated over the
three channels, transparency composited on white); a missing, unreadable, truncated or corrupt
file, or one that is neither PNG nor JPEG, is a ``DatasetError`` naming the file, in one line.
``write_image(path, image)`` writes one atomically (the format from the suffix).

Sample images, named ``PACKAGE/NAME`` (``SAMPLE_IMAGES``), are read from the installed package's
own folder, without importing it: scikit-image ships its sample data in ``skimage/data`` (the
images used here are in its wheel; none is downloaded) and scikit-learn two photographs in
``sklearn/datasets/images``. The offline default of the art task draws its content images and
its styles from them (``DEFAULT_CONTENT``, ``DEFAULT_STYLE``, ``NEW_STYLE``): the photographs
are split by image into meta-training, validation and test photographs, so held-out content is
never a crop of a photograph seen in meta-training.

Decoded images are cached per process, keyed by each file's (path, size, mtime).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from l2o.data.idx import DatasetError
from l2o.errors import InvalidInput

FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg")}
SUFFIXES = tuple(s for suffixes in FORMATS.values() for s in suffixes)

# name -> (package, path inside the installed package)
SAMPLE_IMAGES: dict[str, tuple[str, str]] = {
    "skimage/astronaut": ("skimage", "data/astronaut.png"),
    "skimage/coffee": ("skimage", "data/coffee.png"),
    "skimage/rocket": ("skimage", "data/rocket.jpg"),
    "skimage/motorcycle": ("skimage", "data/motorcycle_left.png"),
    "skimage/chelsea": ("skimage", "data/chelsea.png"),
    "skimage/ihc": ("skimage", "data/ihc.png"),
    "skimage/hubble": ("skimage", "data/hubble_deep_field.jpg"),
    "skimage/gravel": ("skimage", "data/gravel.png"),
    "skimage/grass": ("skimage", "data/grass.png"),
    "skimage/brick": ("skimage", "data/brick.png"),
    "sklearn/china": ("sklearn", "datasets/images/china.jpg"),
    "sklearn/flower": ("sklearn", "datasets/images/flower.jpg"),
}
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}

# The offline default's photographs, split by image: every split is a different set of scenes.
DEFAULT_CONTENT: dict[str, tuple[str, ...]] = {
    "train": ("skimage/astronaut", "skimage/coffee", "skimage/rocket", "skimage/motorcycle"),
    "validation": ("skimage/chelsea",),
    "test": ("sklearn/china", "sklearn/flower"),
}
# The style of meta-training (stained tissue: brush-like strokes in orange and blue) and the
# style the generalisation test uses, never seen in meta-training (a field of stars and galaxies).
DEFAULT_STYLE = "skimage/ihc"
NEW_STYLE = "skimage/hubble"

_CACHE: dict[tuple, Tensor] = {}


def sample_path(name: str) -> Path:
    """The file of sample image ``name`` (``SAMPLE_IMAGES``) in its installed package."""
    if name not in SAMPLE_IMAGES:
        raise InvalidInput(
            f"unknown sample image {name!r} (valid: {', '.join(SAMPLE_IMAGES)}; or a path to "
            f"a PNG or JPEG file)"
        )
    package, relative = SAMPLE_IMAGES[name]
    spec = importlib.util.find_spec(package)  # finds the folder; imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the sample image {name} comes with {PACKAGES[package]}, which is not installed "
            f"(pip install {PACKAGES[package]}, or pip install 'l2o[art]'); or use your own "
            f"PNG/JPEG files (task.content_dir, task.style)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DatasetError(
            f"the sample image {name} is missing from the installed {PACKAGES[package]} "
            f"({path}); reinstall it, or use your own PNG/JPEG files"
        )
    return path


def image_path(name_or_path: str | Path) -> Path:
    """A sample image's file (``skimage/ihc``), or the path itself."""
    path = Path(name_or_path).expanduser()
    sample = isinstance(name_or_path, str) and name_or_path.split("/")[0] in PACKAGES
    if sample and not path.exists():
        return sample_path(str(name_or_path))  # a sample, or one line listing them
    return path


def list_images(directory: str | Path) -> list[Path]:
    """The PNG and JPEG files directly in ``directory`` (by suffix, any case), sorted by name."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DatasetError(f"{directory} is not a directory of PNG or JPEG images")
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not found:
        raise DatasetError(
            f"{directory} holds no PNG or JPEG image (files ending in {', '.join(SUFFIXES)})"
        )
    return found


def read_image(path: str | Path) -> Tensor:
    """The picture in ``path`` as a float32 tensor (3, H, W) in [0, 1], read and verified
    once per process (cached while the file's size and mtime stay the same)."""
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = _decode(path)
    return _CACHE[key]


def _decode(path: Path) -> Tensor:
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in FORMATS:
                    raise DatasetError(f"{path} is a {im.format} image; only PNG and JPEG are read")
                im.load()  # decodes every pixel: a truncated or corrupt file fails here
                if im.mode in ("RGBA", "LA", "PA") or (
                    im.mode == "P" and "transparency" in im.info
                ):
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's guard against a small file that decodes to a huge picture
        raise DatasetError(f"cannot read {path}: {_first_line(e)}") from e
    except Image.UnidentifiedImageError as e:
        raise DatasetError(
            f"cannot read {path}: not a PNG or JPEG image (another format, or a corrupt one)"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for broken data
        raise DatasetError(f"{path} is a truncated or corrupt image ({_first_line(e)})") from e
    if min(rgb.shape[:2]) < 1:
        raise DatasetError(f"{path} holds an empty image")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_suffix(suffix: str) -> None:
    """A file name suffix that ``write_image`` can write (.png, .jpg, .jpeg; any case)."""
    if suffix.lower() not in SUFFIXES:
        raise InvalidInput(
            f"Invalid image file name suffix {suffix or '(none)'!r} (valid: {', '.join(SUFFIXES)})"
        )


def encode_image(image: Tensor, suffix: str) -> bytes:
    """``image`` (3, H, W), values clamped to [0, 1], as the bytes of a PNG or JPEG file."""
    from PIL import Image

    check_suffix(suffix)
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidInput(f"Invalid image: shape {tuple(image.shape)} (expected (3, H, W))")
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), "RGB")
    if suffix.lower() == ".png":
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_image(path: str | Path, image: Tensor) -> Path:
    """Write ``image`` (3, H, W) in [0, 1] to ``path`` (.png, .jpg or .jpeg) atomically: a
    reader sees the old file or the new one, never half of one."""
    from l2o.checkpoint import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, encode_image(image, path.suffix))
    return path
