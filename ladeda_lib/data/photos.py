"""The photo-backed toy world: real photographs as the real class, their imprinted copies as the fakes.

The rendered toy world (:mod:`ladeda_lib.data.toy`) never shows a student a camera photograph, so a student
trained on it calls real photographs fake. This world keeps the toy generator's fakes and platforms but takes
its real class from the real photographs that ship inside installed packages (:data:`BUNDLED`, found offline):

* **Real** — a square crop of a photograph at a random scale (side between 256 pixels and the photograph's
  shorter side, log-uniform), flipped left-right at random, resized to 256×256 by the project's input geometry
  (:func:`~ladeda_lib.data.images.resize_to_uint8`); grey photographs become three equal channels.
* **Fake** — the *same* crop after the toy generator's decoder (:func:`imprint_photo`): the periodic imprint of
  its upsampling stages, with the crop's finest detail partly replaced so that the high-frequency energy after
  the platform's light JPEG equals the photograph's. A photograph and its fake share the scene: only the
  generator's trace differs. A quarter of the fakes are spliced into the photograph, with masks, as in the
  toy world. The imprint is **quieter** than in the rendered world: photographs hold little energy at the
  finest scale (optics, demosaicing and JPEG remove it), so at the toy strength the fakes were measurably
  noisier (noise-level |d| about 1 on reddit-like crops and their fakes). Its finest-detail energy is capped at
  a tenth of the photograph's (:attr:`PhotoConfig.trace_ceiling`; median gain about 0.2 of the toy strength);
  measured on seeds 0 and 1 at the default counts, every global statistic then stays within |d| 0.15 on every
  split and platform (:mod:`ladeda_lib.data.shortcut`).
* **Split by photograph** — each photograph gives crops to one split only (10 train / 3 val / 3 test of the 16,
  shuffled by the seed). ``photos.json`` in the dataset root lists which photograph went where and the package
  it came from; the test photographs, full and unmodified, are written as PNG to the sibling folder
  ``<root>_heldout/`` so an audit can run on photographs the model never saw.

Layout, counts, platforms and file names are the toy world's: build it with
``make_toy_dataset(root, world="photos")`` or ``ladeda make-toy-data --world photos``.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ladeda_lib.data.images import resize_to_uint8
from ladeda_lib.data.toy import (
    ToyConfig,
    ToyRender,
    decoder_imprint,
    hf_energy,
    item_seed,
    jpeg_roundtrip,
    splice_mask,
    to_uint8,
)
from ladeda_lib.geometry import INPUT_GEOMETRY

#: Bumped whenever the photo world's crops or fakes change.
PHOTO_WORLD_VERSION = 1
SPLITS = ("train", "val", "test")

#: Real photographs shipped inside installed packages: (package, path inside it); the file's stem names it.
BUNDLED = tuple(
    ("skimage.data", f)
    for f in "astronaut.png chelsea.png coffee.png rocket.jpg hubble_deep_field.jpg retina.jpg camera.png "
    "moon.png coins.png brick.png grass.png gravel.png motorcycle_left.png".split()
) + (
    ("sklearn.datasets", "images/china.jpg"),  # the files sklearn.datasets.load_sample_images reads
    ("sklearn.datasets", "images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


@dataclass(frozen=True)
class BundledPhoto:
    """One photograph found in an installed package: its name (file stem), package, path inside it, file."""

    name: str
    package: str
    relative: str
    path: Path


def find_bundled(bundled: tuple[tuple[str, str], ...] | None = None) -> tuple[list[BundledPhoto], list[str]]:
    """Locate the ``bundled`` photographs (default :data:`BUNDLED`) in the installed packages, offline.

    Nothing is imported or downloaded. Returns (the photographs found, in list order; one note per photograph
    that is absent, which is skipped).
    """
    found, notes = [], []
    for package, relative in BUNDLED if bundled is None else bundled:
        spec = importlib.util.find_spec(package) if importlib.util.find_spec(package.split(".")[0]) else None
        source = Path(spec.origin).parent / relative if spec is not None and spec.origin else None
        if source is None or not source.is_file():
            notes.append(f"{package}/{relative} is not installed: skipped")
            continue
        found.append(BundledPhoto(source.stem, package, relative, source))
    return found, notes


@dataclass(frozen=True)
class PhotoConfig:
    """How the photo world cuts its photographs (split shares, crop scales, flips) and how loud its fakes' trace is."""

    split_weights: tuple[int, int, int] = (10, 3, 3)  # photographs for train / val / test (of 16; scaled if fewer)
    min_crop: int = INPUT_GEOMETRY.image_size  # smallest crop side; the largest is the photograph's shorter side
    flip: float = 0.5  # probability of a left-right flip
    detail_sigma: float = 0.6  # Gaussian blur (pixels) separating a crop's content from its finest detail
    trace_ceiling: float = 0.1  # the imprint's finest-detail energy is at most this share of the photograph's


def split_photos(names: list[str], seed: int, weights: tuple[int, int, int] = (10, 3, 3)) -> dict[str, list[str]]:
    """Assign whole photographs to train / val / test: a seeded shuffle cut in proportion to ``weights``.

    Val and test get at least one photograph each and train the rest; ``ValueError`` below three photographs.
    """
    if len(names) < 3:
        raise ValueError(f"the photo world needs at least 3 photographs (one per split), found {len(names)}")
    n, total = len(names), sum(weights)
    n_val, n_test = (max(1, round(n * w / total)) for w in weights[1:])
    n_val, n_test = min(n_val, n - 2), min(n_test, n - 1 - min(n_val, n - 2))
    order = np.random.default_rng(item_seed(seed, "photo split")).permutation(sorted(names))
    cut = [0, n - n_val - n_test, n - n_test, n]
    return {s: sorted(str(x) for x in order[cut[i] : cut[i + 1]]) for i, s in enumerate(SPLITS)}


def crop_photo(photo: np.ndarray, rng: np.random.Generator, cfg: PhotoConfig = PhotoConfig()) -> np.ndarray:
    """A random square crop of ``photo`` (H, W) or (H, W, 3) uint8, flipped at random → uint8 (256, 256, 3).

    The side is log-uniform in [min_crop, min(H, W)] (a smaller photograph is taken whole and enlarged); the crop
    is resized with the project's input geometry, so a 256-pixel crop keeps the photograph's native scale.
    """
    h, w = photo.shape[:2]
    top = min(h, w)
    side = int(round(np.exp(rng.uniform(np.log(min(cfg.min_crop, top)), np.log(top)))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    if rng.uniform() < cfg.flip:
        crop = crop[:, ::-1]
    return resize_to_uint8(np.ascontiguousarray(crop)).permute(1, 2, 0).numpy()


_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], np.float32)


def _finest_energy(gray: np.ndarray) -> float:
    """Energy of a gray image's finest detail, (h, w) → float: the variance of Immerkær's noise kernel's response."""
    return float(ndimage.convolve(gray, _IMMERKAER, mode="mirror").var())


def imprint_photo(real: np.ndarray, rng: np.random.Generator, cfg: ToyConfig, photo_cfg: PhotoConfig) -> np.ndarray:
    """The toy generator's decoder applied to a photograph: uint8 (H, W, 3) → display float32 (H, W, 3) in [0, 1].

    In linear light the crop splits into content (blurred by ``photo_cfg.detail_sigma``) and finest detail (the
    rest). The decoder's periodic imprint (:func:`~ladeda_lib.data.toy.decoder_imprint`, strength
    ``cfg.trace_strength``) multiplies the content, turned down where needed so that its finest-detail energy
    is at most ``photo_cfg.trace_ceiling`` of the photograph's: photographs carry far less energy at the
    finest scale than the toy world's sensor noise, and a louder imprint would make fakes globally noisier.
    Then a share of the detail is added back, chosen (as the toy world chooses its generator's noise) so that
    the fake's high-frequency energy after a JPEG at ``cfg.match_quality`` equals the photograph's.
    """
    linear = (real.astype(np.float32) / 255.0) ** 2.2
    sigma = photo_cfg.detail_sigma
    content = ndimage.gaussian_filter(linear, (sigma, sigma, 0))
    detail = linear - content
    imprint = decoder_imprint(real.shape[0], real.shape[1], rng, cfg)[..., None]

    def render(gain: float, share: float) -> np.ndarray:
        return np.clip(content * (1.0 + gain * imprint) + np.sqrt(share) * detail, 0.0, 1.0) ** (1 / 2.2)

    def gray(gain: float, share: float) -> np.ndarray:  # after the light JPEG of the platforms
        return jpeg_roundtrip(render(gain, share), cfg.match_quality)

    photo = jpeg_roundtrip(real.astype(np.float32) / 255.0, cfg.match_quality)
    loud = _finest_energy(gray(1.0, 0.0)) - _finest_energy(gray(0.0, 0.0))  # the imprint's own energy, at full gain
    gain = min(1.0, float(np.sqrt(photo_cfg.trace_ceiling * _finest_energy(photo) / max(loud, 1e-9))))
    target, without, full = hf_energy(photo), hf_energy(gray(gain, 0.0)), hf_energy(gray(gain, 1.0))
    share = (target - without) / max(full - without, 1e-9)  # energies add, as in the toy generator
    return render(gain, float(np.clip(share, cfg.min_noise_share, 2.0)))


def read_bundled(photo: BundledPhoto) -> np.ndarray:
    """A bundled photograph's pixels as stored: uint8 (H, W) for a grey file, (H, W, 3) otherwise."""
    with Image.open(photo.path) as img:
        return np.asarray(img.convert("L" if img.mode == "L" else "RGB"))


def heldout_dir(root: str | Path) -> Path:
    """The folder of a photo world's held-out test photographs, beside its root: ``<root>_heldout``."""
    root = Path(root).resolve()
    return root.parent / f"{root.name}_heldout"


class PhotoWorld:
    """The photo world of one seed: its photographs, their split, and the render of any item.

    ``render(split, platform, label, index)`` → (:class:`~ladeda_lib.data.toy.ToyRender`, the platform
    re-encoding's generator); the same ``(split, platform, index)`` gives a real crop (label 0) and its fake.
    """

    def __init__(
        self,
        seed: int,
        cfg: ToyConfig | None = None,
        photo_cfg: PhotoConfig | None = None,
        bundled: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self.seed, self.cfg, self.photo_cfg = seed, cfg or ToyConfig(), photo_cfg or PhotoConfig()
        photos, self.notes = find_bundled(bundled)
        for note in self.notes:
            warnings.warn(f"photo world: {note}", stacklevel=2)
        self.photos = {p.name: p for p in photos}
        self.pixels = {p.name: read_bundled(p) for p in photos}
        self.split = split_photos(list(self.photos), seed, self.photo_cfg.split_weights)

    def photo_of(self, split: str, platform: str | None, index: int) -> str:
        """Name of the photograph the pair ``index`` is cut from: the split's photographs in a seeded cycle."""
        names = self.split[split]
        order = np.random.default_rng(item_seed(self.seed, "photo order", split, platform)).permutation(len(names))
        return names[order[index % len(names)]]

    def render(self, split: str, platform: str | None, label: int, index: int) -> tuple[ToyRender, np.random.Generator]:
        """One image of the world before platform re-encoding, and the generator the re-encoding draws from."""
        pair = ("photo", split, platform, index)
        crop_rng = np.random.default_rng(item_seed(self.seed, *pair, "crop"))
        real = crop_photo(self.pixels[self.photo_of(split, platform, index)], crop_rng, self.photo_cfg)
        platform_rng = np.random.default_rng(item_seed(self.seed, *pair, "platform"))
        if label == 0:
            return ToyRender(real), platform_rng
        rng = np.random.default_rng(item_seed(self.seed, *pair, "fake"))
        partial = bool(rng.uniform() < self.cfg.partial_fraction)
        fake = imprint_photo(real, rng, self.cfg, self.photo_cfg)
        if not partial:
            return ToyRender(to_uint8(fake)), platform_rng
        soft = splice_mask(real.shape[0], real.shape[1], rng, self.cfg.splice_feather)[..., None]
        spliced = soft * fake + (1.0 - soft) * (real.astype(np.float32) / 255.0)
        return ToyRender(to_uint8(spliced), source=real, mask=soft[..., 0] >= 0.5), platform_rng

    def write_records(self, root: str | Path) -> Path:
        """Write ``root/photos.json`` and the test photographs, full and unmodified, to ``<root>_heldout/*.png``.

        PNG files in the held-out folder named after another known photograph (left by another seed) are
        removed, so the folder holds exactly this world's test photographs. Returns the held-out folder.
        """
        root, heldout = Path(root), heldout_dir(root)
        heldout.mkdir(parents=True, exist_ok=True)
        known = {Path(rel).stem for _, rel in BUNDLED} | set(self.photos)
        for stale in heldout.glob("*.png"):
            if stale.stem in known and stale.stem not in self.split["test"]:
                stale.unlink()
        for name in self.split["test"]:
            Image.fromarray(self.pixels[name]).save(heldout / f"{name}.png")
        where = {name: s for s in SPLITS for name in self.split[s]}
        record = {
            "world": "photos",
            "version": PHOTO_WORLD_VERSION,
            "seed": self.seed,
            "photo_config": asdict(self.photo_cfg),
            "split": self.split,
            "heldout": heldout.name,
            "photos": {
                name: {"split": where[name], "package": p.package, "file": p.relative, "size": self._size(name)}
                for name, p in sorted(self.photos.items())
            },
            "skipped": self.notes,
        }
        (root / "photos.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return heldout

    def _size(self, name: str) -> list[int]:
        h, w = self.pixels[name].shape[:2]
        return [int(w), int(h)]
