"""An offline, WildRF-shaped toy dataset that only a patch detector can solve.

Every image is rendered from its own seed (derived from the dataset seed, split, platform, class and
index), so the set is byte-identical for a given seed and any image can be re-rendered alone.

* **Real** — a camera-like picture: a dead-leaves scene (occluding discs, ellipses and rectangles whose
  sizes follow a power law) textured with 1/f noise and soft shading, blurred by the optics, then
  Poisson–Gaussian sensor noise added **per pixel** and gamma-encoded.
* **Fake** — a scene from the *same* distribution, with the same optics, drawn by a generator whose
  traces are local: each of its three ×2 upsampling stages leaves a periodic imprint (a gain per output
  phase, repeating every 2, 4 and 8 pixels — the checkerboard of transposed-convolution decoders), and
  its noise replaces the sensor's. The generator's noise level is set, image by image, so that the fake's
  high-frequency energy after the platform's light JPEG equals that of a photograph of the same scene.
  Colour, brightness, contrast, sharpness and noise level therefore match between the classes (the
  shortcut check, :mod:`ladeda_lib.data.shortcut`, measures it): what gives a fake away is the periodic
  structure inside every small patch, which is what LaDeDa's 9×9 patches and Tiny-LaDeDa's filters learn.
  :func:`render_toy_pair` renders a photograph and a generated image of one scene, side by side.
* **Partial fakes** — about a quarter of the fakes are a photograph with a generated region of the same
  scene spliced in (an ellipse or rectangle blended over about 8 pixels, so no seam is visible);
  ``masks/<same path>.png`` holds the region (white = generated, the 0.5 level of the blend).
* **Platforms** — train, val and ``test/reddit`` are saved as light JPEG (quality 90–95, no rescale);
  ``test/twitter`` is rescaled (×0.7–0.85) and saved at quality 75–85; ``test/facebook`` is downscaled
  (×0.5–0.65) and saved at quality 65–75 — rescaling and compression weaken the finest traces, so training
  on the reddit-like data and testing on the others shows a cross-platform gap, as WildRF does.

Introduced in notebook 02.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from ladeda_lib import paths

PLATFORMS = ("reddit", "twitter", "facebook")
#: The worlds ``make_toy_dataset`` builds: rendered scenes, or photographs shipped in installed packages
#: (:mod:`ladeda_lib.data.photos`).
WORLDS = ("scenes", "photos")
#: Bumped whenever rendering changes, so ``ensure_toy_dataset`` regenerates stale copies.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class PlatformStyle:
    """How a platform re-encodes an upload: rescale factor range and JPEG quality range (inclusive)."""

    scale: tuple[float, float] = (1.0, 1.0)
    quality: tuple[int, int] = (90, 95)


#: Platform styles; train and val use "reddit".
PLATFORM_STYLES = {
    "reddit": PlatformStyle((1.0, 1.0), (90, 95)),
    "twitter": PlatformStyle((0.7, 0.85), (75, 85)),
    "facebook": PlatformStyle((0.5, 0.65), (65, 75)),
}


@dataclass(frozen=True)
class ToyConfig:
    """Sizes and strengths of the toy dataset. Counts are per class (real and fake each)."""

    train_per_class: int = 150
    val_per_class: int = 50
    test_per_class: int = 50
    platforms: tuple[str, ...] = PLATFORMS
    min_side: int = 192
    max_side: int = 384
    partial_fraction: float = 0.25
    decoder_stages: int = 3  # ×2 upsampling stages of the generator: periodic imprints at periods 2, 4, 8
    trace_strength: float = 0.05  # relative gain (RMS) of each stage's imprint
    min_noise_share: float = 0.1  # the generator's noise keeps at least this share of the sensor noise variance
    match_quality: int = 92  # JPEG quality at which fakes' high-frequency energy is matched to photographs'
    splice_feather: float = 8.0  # pixels over which a spliced region blends into the photograph
    platform_styles: dict[str, PlatformStyle] = field(default_factory=lambda: dict(PLATFORM_STYLES))


@dataclass
class ToyRender:
    """One rendered toy image before platform re-encoding.

    ``image`` uint8 (H, W, 3); for a partial fake ``source`` is the real image it was spliced into and
    ``mask`` a bool (H, W) array of the generated region; both None otherwise.
    """

    image: np.ndarray
    source: np.ndarray | None = None
    mask: np.ndarray | None = None


def item_seed(seed: int, *parts: object) -> np.random.SeedSequence:
    """The random stream of one item: a SeedSequence from ``seed`` and the parts that name the item."""
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"))


def _pink_noise(h: int, w: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f^beta amplitude spectrum, (h, w) float32."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec = (rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))) / f**beta
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    return out / (out.std() + 1e-8)


def _scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Dead-leaves scene in linear light, (h, w, 3) float32 in about [0, 1]."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(0.2, 0.7, 3)
    tex = _pink_noise(h, w, rng, rng.uniform(1.0, 1.6))
    tex2 = _pink_noise(h, w, rng, rng.uniform(0.6, 1.0))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    rmin, rmax, a = 3.0, min(h, w) / 2.5, 3.0
    n = int(rng.integers(120, 260))
    u = rng.uniform(size=n)
    radii = (rmin ** (1 - a) + u * (rmax ** (1 - a) - rmin ** (1 - a))) ** (1 / (1 - a))
    radii = np.sort(radii)[::-1]  # big leaves first (background), small on top
    for r in radii:
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        ry, rx = r, r * rng.uniform(0.5, 1.6)
        y0, y1 = max(0, int(cy - ry)), min(h, int(cy + ry) + 1)
        x0, x1 = max(0, int(cx - rx)), min(w, int(cx + rx) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (yy[y0:y1] - cy) / ry
        dx = (xx[:, x0:x1] - cx) / rx
        shape = rng.integers(0, 3)
        if shape == 2:
            inside = (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
        else:
            inside = dy * dy + dx * dx <= 1.0
        hue = rng.uniform(0.05, 0.95, 3)
        sat = rng.uniform(0.2, 1.0)
        color = (hue.mean() + sat * (hue - hue.mean())).astype(np.float32)
        amp = rng.uniform(0.02, 0.15)
        t = tex if rng.uniform() < 0.5 else tex2
        shade = 1.0 + rng.uniform(-0.25, 0.25) * dy + rng.uniform(-0.25, 0.25) * dx
        patch = color[None, None, :] * shade[..., None] + amp * t[y0:y1, x0:x1, None]
        region = img[y0:y1, x0:x1]
        region[inside] = patch[inside]
    return np.clip(img, 0.0, 1.0)


def _sensor(linear: np.ndarray, rng: np.random.Generator, gain: float, read: float) -> np.ndarray:
    """Poisson–Gaussian per-pixel noise in linear light, then gamma: (h, w, 3) float32 → display [0, 1]."""
    sigma = np.sqrt(gain * linear + read * read)
    noisy = linear + sigma * rng.standard_normal(linear.shape, dtype=np.float32)
    return np.clip(noisy, 0.0, 1.0) ** (1 / 2.2)


def _phase_table(period: int, rng: np.random.Generator) -> np.ndarray:
    """One upsampling stage's imprint: a zero-mean, unit-RMS gain per output phase, (period, period) float32.

    A stride-2 transposed convolution with an uneven kernel gives each of its output phases its own gain;
    seen from the final image, a stage ``s`` steps before the output repeats every ``2**s`` pixels.
    """
    t = rng.standard_normal((period, period)).astype(np.float32)
    t -= t.mean()
    return t / (float(np.sqrt((t * t).mean())) + 1e-8)


def decoder_imprint(h: int, w: int, rng: np.random.Generator, cfg: ToyConfig) -> np.ndarray:
    """The generator's local trace as a relative gain map (h, w) float32, zero mean.

    The sum over ``cfg.decoder_stages`` upsampling stages of their phase tables (periods 2, 4, 8, ...),
    tiled over the image with a random phase offset, each with strength ``cfg.trace_strength``. It is periodic and local — invisible in any global statistic.
    """
    out = np.zeros((h, w), np.float32)
    for stage in range(cfg.decoder_stages):
        period = 2 ** (stage + 1)
        table = _phase_table(period, rng)
        oy, ox = (int(v) for v in rng.integers(0, period, 2))
        reps = (-(-(h + oy) // period), -(-(w + ox) // period))
        out += cfg.trace_strength * np.tile(table, reps)[oy : oy + h, ox : ox + w]
    return out


_LAPLACE = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
_SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], np.float32)


def hf_energy(gray: np.ndarray) -> float:
    """High-frequency energy of a gray image (h, w): the mean of its Laplacian and Sobel-gradient variances."""
    lap = ndimage.convolve(gray, _LAPLACE, mode="mirror").var() / 20.0
    grad = (
        ndimage.convolve(gray, _SOBEL, mode="mirror").var() + ndimage.convolve(gray, _SOBEL.T, mode="mirror").var()
    ) / 24.0
    return 0.5 * float(lap + grad)


def jpeg_roundtrip(display: np.ndarray, quality: int) -> np.ndarray:
    """Encode a display-referred (h, w, 3) [0, 1] image as JPEG and decode it again: float32 gray [0, 255]."""
    buf = BytesIO()
    Image.fromarray(to_uint8(display)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"), dtype=np.float32)


def _generate(
    linear: np.ndarray, rng: np.random.Generator, cfg: ToyConfig, gain: float, read: float, real: np.ndarray
) -> np.ndarray:
    """Generator-like rendering of a scene: (h, w, 3) linear → display [0, 1].

    The content is the scene itself (same optics, same colours, same sharpness as a photograph of it).
    What differs is local: the decoder's periodic imprint multiplies the signal (:func:`decoder_imprint`),
    and the generator's noise replaces the sensor's. The generator's noise level is chosen so that the
    fake's high-frequency energy equals that of ``real`` — the photograph of the same scene (display
    [0, 1]) — after the light JPEG every platform applies: a periodic imprint survives JPEG better than
    white noise does, so matching before compression would leave fakes measurably "sharper". Sharpness and
    noise-level statistics of fakes therefore match those of photographs, while every 9×9 patch still
    carries the periodic trace.
    """
    imprint = decoder_imprint(linear.shape[0], linear.shape[1], rng, cfg)
    signal = linear * (1.0 + imprint[..., None])
    noise = np.sqrt(gain * linear + read * read) * rng.standard_normal(linear.shape, dtype=np.float32)

    def render(share: float) -> np.ndarray:
        return np.clip(signal + np.sqrt(share) * noise, 0.0, 1.0) ** (1 / 2.2)

    q = cfg.match_quality
    target = hf_energy(jpeg_roundtrip(real, q))
    without, full = hf_energy(jpeg_roundtrip(render(0.0), q)), hf_energy(jpeg_roundtrip(render(1.0), q))
    # energies add: E(share) ≈ E(0) + share · (E(1) − E(0))
    share = (target - without) / max(full - without, 1e-9)
    return render(float(np.clip(share, cfg.min_noise_share, 2.0)))


def splice_mask(h: int, w: int, rng: np.random.Generator, feather: float = 8.0) -> np.ndarray:
    """Soft mask (h, w) float32 in [0, 1]: an ellipse or rectangle covering ~10–35% of the image.

    The edge is feathered over about ``feather`` pixels, so the blend leaves no visible seam.
    """
    area = rng.uniform(0.10, 0.35) * h * w
    aspect = rng.uniform(0.6, 1.6)
    ry = np.sqrt(area / np.pi / aspect)
    rx = ry * aspect
    ry, rx = min(ry, h / 2.2), min(rx, w / 2.2)
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    yy = (np.arange(h, dtype=np.float32)[:, None] - cy) / ry
    xx = (np.arange(w, dtype=np.float32)[None, :] - cx) / rx
    if rng.uniform() < 0.5:
        d = np.sqrt(yy * yy + xx * xx)
    else:
        d = np.maximum(np.abs(yy), np.abs(xx))
    edge = feather / min(ry, rx)
    return np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A [0, 1] float image → uint8, rounded and clipped."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _render_scene(seed: int, cfg: ToyConfig) -> tuple[np.ndarray, np.random.Generator, float, float]:
    """The part of a render that real and fake share: size, scene, optics blur and sensor gains."""
    rng = np.random.default_rng(item_seed(seed, "render"))
    h = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    w = int(np.clip(h * rng.uniform(0.65, 1.5), cfg.min_side, cfg.max_side))
    linear = _scene(h, w, rng)
    sigma = rng.uniform(0.5, 0.9)
    linear = ndimage.gaussian_filter(linear, (sigma, sigma, 0))
    gain, read = rng.uniform(0.004, 0.016), rng.uniform(0.002, 0.008)
    return linear, rng, gain, read


def render_toy_image(seed: int, label: int, partial: bool = False, cfg: ToyConfig | None = None) -> ToyRender:
    """Render one toy image from its own seed: real (label 0), full fake, or partial (spliced) fake.

    Returns a :class:`ToyRender` with uint8 (H, W, 3); H, W in ``[cfg.min_side, cfg.max_side]``. The
    same seed gives the same scene for every label: ``render_toy_image(s, 0)`` and ``render_toy_image(s, 1)``
    are a photograph and a generated image of one scene (see :func:`render_toy_pair`).
    """
    cfg = cfg or ToyConfig()
    linear, rng, gain, read = _render_scene(seed, cfg)
    real_rng = np.random.default_rng(item_seed(seed, "sensor"))
    real = _sensor(linear, real_rng, gain, read)
    if label == 0:
        return ToyRender(to_uint8(real))
    fake = _generate(linear, rng, cfg, gain, read, real)
    if not partial:
        return ToyRender(to_uint8(fake))
    h, w, _ = linear.shape
    soft = splice_mask(h, w, rng, cfg.splice_feather)[..., None]
    spliced = soft * fake + (1.0 - soft) * real
    return ToyRender(to_uint8(spliced), source=to_uint8(real), mask=soft[..., 0] >= 0.5)


def render_toy_pair(seed: int, cfg: ToyConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A photograph and a generated image of the same scene: two uint8 (H, W, 3) arrays, for side-by-side figures.

    Only the generation traces differ (the decoder's periodic imprint and the generator's noise); the
    scene, optics and noise level are shared. Introduced in notebook 02.
    """
    return render_toy_image(seed, 0, cfg=cfg).image, render_toy_image(seed, 1, cfg=cfg).image


def _reencode(image: np.ndarray, style: PlatformStyle, rng: np.random.Generator) -> tuple[bytes, float]:
    """Platform re-encoding: optional rescale (bicubic) then JPEG; returns (JPEG bytes, scale used)."""
    pil = Image.fromarray(image)
    scale = float(rng.uniform(*style.scale))
    if scale != 1.0:
        size = (max(16, round(pil.width * scale)), max(16, round(pil.height * scale)))
        pil = pil.resize(size, Image.Resampling.BICUBIC)
    quality = int(rng.integers(style.quality[0], style.quality[1] + 1))
    buf = BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), scale


def _items(cfg: ToyConfig) -> list[tuple[str, str | None, int, int]]:
    """(split, platform, label, index) of every image."""
    items = []
    for split, platforms, n in (
        ("train", (None,), cfg.train_per_class),
        ("val", (None,), cfg.val_per_class),
        ("test", cfg.platforms, cfg.test_per_class),
    ):
        for platform in platforms:
            for label in (0, 1):
                items += [(split, platform, label, i) for i in range(n)]
    return items


def toy_item_path(split: str, platform: str | None, label: int, index: int) -> Path:
    """Relative path of one toy image, e.g. ``test/twitter/1_fake/fake_0007.jpg``."""
    cls = "1_fake" if label else "0_real"
    folder = Path(split) / platform / cls if platform else Path(split) / cls
    return folder / f"{'fake' if label else 'real'}_{index:04d}.jpg"


def toy_item_seed(
    seed: int, split: str, platform: str | None, label: int, index: int, partial_fraction: float = 0.25
) -> tuple[int, bool]:
    """The render seed of one toy image and whether it is a partial fake (deterministic from ``seed``)."""
    ss = item_seed(seed, split, platform, label, index)
    rng = np.random.default_rng(ss)
    item = int(rng.integers(0, 2**62))
    partial = bool(label == 1 and rng.uniform() < partial_fraction)
    return item, partial


def _scene_renderer(seed: int, cfg: ToyConfig) -> Callable[..., tuple[ToyRender, np.random.Generator]]:
    """The scenes world's ``(split, platform, label, index)`` → (render, the platform re-encoding's generator)."""

    def render(split: str, platform: str | None, label: int, index: int) -> tuple[ToyRender, np.random.Generator]:
        render_seed, partial = toy_item_seed(seed, split, platform, label, index, cfg.partial_fraction)
        platform_rng = np.random.default_rng(item_seed(render_seed, "platform"))
        return render_toy_image(render_seed, label, partial, cfg), platform_rng

    return render


def make_toy_dataset(
    output: str | Path,
    seed: int = 0,
    config: ToyConfig | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    world: str = "scenes",
    photo_config: Any = None,
) -> Path:
    """Write the toy dataset in WildRF layout under ``output`` and return ``output``.

    ``train/{0_real,1_fake}``, ``val/{0_real,1_fake}``, ``test/{reddit,twitter,facebook}/{0_real,1_fake}``
    (JPEG files), ``masks/…/<name>.png`` for partial fakes (white = generated) and ``toy_config.json``.
    Byte-identical for the same seed and config. Default: 150 + 150 train, 50 + 50 val, 50 + 50 per
    platform (700 images). ``world="photos"`` takes the real class from photographs shipped in installed
    packages instead of rendered scenes, split by photograph, and also writes ``photos.json`` and the held-out
    test photographs to ``<output>_heldout/`` (:mod:`ladeda_lib.data.photos`); ``photo_config`` (a
    :class:`~ladeda_lib.data.photos.PhotoConfig`, None = its defaults) sets its split, crops and trace level and
    is recorded in ``photos.json``. Works behind notebook 02.
    """
    from tqdm.auto import tqdm

    cfg = config or ToyConfig()
    unknown = set(cfg.platforms) - set(cfg.platform_styles)
    if unknown:
        raise ValueError(f"no platform style for {sorted(unknown)}; known: {sorted(cfg.platform_styles)}")
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; known: {', '.join(WORLDS)}")
    if photo_config is not None and world != "photos":
        raise ValueError("photo_config sets the photo world: pass world='photos' with it")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if world == "photos":
        from ladeda_lib.data.photos import PhotoWorld

        photo_world = PhotoWorld(seed, cfg, photo_config)
        render_item = photo_world.render
    else:
        render_item = _scene_renderer(seed, cfg)

    def work(item: tuple[str, str | None, int, int]) -> None:
        split, platform, label, index = item
        render, platform_rng = render_item(split, platform, label, index)
        style = cfg.platform_styles[platform or "reddit"]
        data, scale = _reencode(render.image, style, platform_rng)
        rel = toy_item_path(split, platform, label, index)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        if render.mask is not None:
            mask = Image.fromarray(render.mask.astype(np.uint8) * 255, mode="L")
            if scale != 1.0:
                mask = mask.resize((max(16, round(mask.width * scale)), max(16, round(mask.height * scale))))
                mask = mask.point(lambda v: 255 if v >= 128 else 0)
            mask_path = out / "masks" / rel.with_suffix(".png")
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask.save(mask_path, format="PNG")

    items = _items(cfg)
    workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(work, items), total=len(items), desc="toy dataset", unit="img", disable=not progress):
            pass
    if world == "photos":
        photo_world.write_records(out)
    manifest = {"seed": seed, "config": asdict(cfg), "generator": GENERATOR_VERSION, "images": len(items)}
    manifest["world"] = world
    (out / "toy_config.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if progress:
        print(f"toy dataset ({world}): {len(items)} images in {time.perf_counter() - start:.1f} s → {paths.shown(out)}")
    return out


def ensure_toy_dataset(path: str | Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Return the toy dataset root (default ``data/toy_wildrf``), generating it first if it is absent.

    A folder whose ``toy_config.json`` records another seed, configuration, generator version or world is
    regenerated in place (the files are overwritten with the current ones).
    """
    root = Path(path) if path is not None else paths.default_toy_dir()
    if is_default_toy(root, seed):
        return root
    make_toy_dataset(root, seed=seed, progress=progress)  # absent, or made by another generator version
    return root


def is_default_toy(root: str | Path, seed: int = 0) -> bool:
    """True when ``root/toy_config.json`` records this generator version, ``seed``, the default configuration and
    the scenes world; False when there is no manifest. A manifest that cannot be read raises (OSError, ValueError).
    """
    manifest = Path(root) / "toy_config.json"
    if not manifest.is_file():
        return False
    stored = json.loads(manifest.read_text())
    expected = json.loads(json.dumps({"seed": seed, "config": asdict(ToyConfig()), "generator": GENERATOR_VERSION}))
    return {k: stored.get(k) for k in expected} == expected and stored.get("world", "scenes") == "scenes"
