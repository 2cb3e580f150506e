"""Robustness in the wild: how a detector's scores hold up when images are recompressed, resized or blurred.

``ladeda robustness --model M [--data D] [--output DIR]`` scores the test images of a dataset under a sweep
of deterministic degradations (:mod:`ladeda_lib.data.degrade`) and reports, per setting, AP, accuracy and
the share of decisions that *flip* against the clean image. The model is anything ``ladeda predict`` loads —
a checkpoint, a published state_dict, an ``.onnx`` or a ``.tflite`` file — through
:func:`ladeda_lib.predictors.load_predictor` and the one scoring loop, :func:`ladeda_lib.runner.predict`.

* :func:`default_sweep` — clean; JPEG 95 → 30; rescale 0.9 → 0.25 (then back through the shared geometry);
  Gaussian blur 0.5 → 3; centre crop instead of the whole-image resize; the platform chains of the toy set
  (rescale then JPEG, as the toy platforms and real networks do).
* :func:`run_sweep` — one model, one list of settings → :class:`SweepResult`; ``tta`` averages each score
  over degraded copies (:func:`ladeda_lib.data.degrade.tta_chains`).
* :func:`write_outputs` — ``robustness.md``, ``robustness.json``, ``robustness.png``.
* :func:`plot_sweeps` — the curves of several models on one figure (notebook 09).
* :func:`deployment_table` — the small table (JPEG 50, rescale 0.5) the pipeline report shows for the
  deployed file.

Everything is deterministic: the degradations draw no random numbers. Introduced in notebook 09.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladeda_lib.contract import sigmoid
from ladeda_lib.data.degrade import Degradation, apply_chain, center_crop, chain_label, platform_chains, tta_chains
from ladeda_lib.jsonio import json_safe, write_json

#: Families of settings, in report order, with the x-axis each is plotted against.
FAMILIES = {
    "clean": "",
    "jpeg": "JPEG quality",
    "rescale": "rescale factor",
    "blur": "Gaussian blur sigma (pixels)",
    "crop": "",
    "platform": "",
}

ScoreFn = Callable[[torch.Tensor], np.ndarray]  # uint8 (N, 3, S, S) → logits (N,)


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: a family, the chain of degradations, and its x value (strength) for plots."""

    family: str
    chain: tuple[Degradation, ...] = ()
    x: float | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or chain_label(self.chain)


def default_sweep(
    jpeg: Sequence[int] = (95, 90, 80, 70, 60, 50, 40, 30),
    rescale: Sequence[float] = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25),
    blur: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0),
    crop: bool = True,
    platforms: bool = True,
) -> list[Setting]:
    """The settings ``ladeda robustness`` scores: clean first, then each family from mild to harsh."""
    settings = [Setting("clean", (), None, "clean")]
    settings += [Setting("jpeg", (Degradation("jpeg", q),), float(q)) for q in jpeg]
    settings += [Setting("rescale", (Degradation("rescale", f),), float(f)) for f in rescale]
    settings += [Setting("blur", (Degradation("blur", s),), float(s)) for s in blur]
    if crop:
        settings.append(Setting("crop", (Degradation("crop"),), None, "centre crop (aspect kept, no squash)"))
    if platforms:
        settings += [
            Setting("platform", chain, None, f"{name}: {chain_label(chain)}")
            for name, chain in platform_chains().items()
        ]
    return settings


@dataclass
class SweepResult:
    """Per-setting metrics of one model: ``rows`` of dicts with ``family``, ``label``, ``x``, ``ap``, ``auc``,
    ``accuracy``, ``flip_rate`` (share of decisions that differ from the clean image's) and ``n``."""

    model: str
    data: str
    platform: str | None
    n: int
    tta: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, label: str) -> dict[str, Any]:
        """The row whose label is (or starts with) ``label``."""
        for r in self.rows:
            if r["label"] == label or r["label"].startswith(label):
                return r
        raise KeyError(f"no setting {label!r}; settings: {[r['label'] for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "platform": self.platform,
            "n_images": self.n,
            "tta": self.tta,
            "settings": json_safe(self.rows),
        }


# ----------------------------------------------------------------------------------------------------
# The model: one public loader (the inference pipeline)
# ----------------------------------------------------------------------------------------------------
def load_scorer(model: Any, batch_size: int = 16) -> tuple[ScoreFn, str]:
    """A scoring function uint8 (N, 3, S, S) → logits (N,) and a name, for anything ``ladeda predict`` loads.

    ``model``: a :class:`~ladeda_lib.models.PatchDetector`, a checkpoint (ours or a published state_dict), an
    ``.onnx`` or a ``.tflite`` file — loaded by :func:`ladeda_lib.predictors.load_predictor` and scored by the
    one scoring loop, :func:`ladeda_lib.runner.predict`. A missing or unreadable file raises
    ``ValueError``/``FileNotFoundError`` naming it and what was expected.
    """
    from ladeda_lib.predictors import load_predictor
    from ladeda_lib.runner import predict

    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"--model {path}: file not found (expected a checkpoint .pt/.pth, an .onnx or a .tflite file)"
            )
        try:
            predictor = load_predictor(path)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--model {path}: {err}") from err
        except Exception as err:  # noqa: BLE001 - a corrupt file surfaces as many error types; name the file
            raise ValueError(
                f"--model {path}: cannot load it as a model ({type(err).__name__}: {err}); expected a checkpoint "
                "(.pt/.pth, ours or a published state_dict), an .onnx or a .tflite file"
            ) from err
        name = str(path)
    else:
        predictor = load_predictor(model)
        name = type(model).__name__

    def score(images: torch.Tensor) -> np.ndarray:
        return predict(predictor, images, batch_size)[0].numpy().astype(np.float64)

    return score, name


def tta_score(score: ScoreFn, images: torch.Tensor, n: int) -> np.ndarray:
    """Test-time augmentation: the mean logit over the first ``n`` copies of :data:`~ladeda_lib.data.degrade.TTA_CHAINS`.

    uint8 (N, 3, S, S) → (N,) logits; ``n = 1`` is the plain score. Works behind notebook 09.
    """
    chains = tta_chains(n)
    if len(chains) == 1:
        return score(images)
    return np.mean([score(apply_chain(images, chain)) for chain in chains], axis=0)


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def select_test_samples(
    data: Any = None, platform: str | None = "auto", split: str = "test"
) -> tuple[list, str, str | None]:
    """Test samples of a dataset: ``(samples, dataset root, platform used)``.

    ``platform="auto"`` takes the first platform of :data:`ladeda_lib.data.toy.PLATFORMS` present in the
    split (``reddit``: the training platform, whose images are the least degraded already), else the whole
    split; ``"all"`` or None takes the whole split; a name takes that platform. Raises ``ValueError`` when
    nothing is left, naming the split, the platform and what the dataset has.
    """
    from ladeda_lib.data.layouts import resolve_dataset
    from ladeda_lib.data.toy import PLATFORMS

    index = resolve_dataset(data)
    samples = index.select(split=split)
    present = sorted({s.platform for s in samples if s.platform})
    chosen: str | None
    if platform == "auto":
        chosen = next((p for p in PLATFORMS if p in present), None)
    elif platform in (None, "all"):
        chosen = None
    else:
        chosen = platform
    if chosen is not None:
        samples = [s for s in samples if s.platform == chosen]
    if not samples:
        where = f"split {split!r}" + (f", platform {chosen!r}" if chosen else "")
        raise ValueError(
            f"{index.root}: no images in {where} to score (splits: {index.splits}, platforms of {split!r}: "
            f"{present or 'none'})"
        )
    return samples, str(index.root), chosen


def _degraded(setting: Setting, images: torch.Tensor, samples: Sequence[Any]) -> torch.Tensor:
    if setting.family != "crop":
        return apply_chain(images, setting.chain) if setting.chain else images
    # the crop alternative starts from the original file, not from the already squashed 256×256 image
    from torchvision.transforms.v2 import functional as TF

    from ladeda_lib.data.images import load_image

    return torch.stack([center_crop(TF.pil_to_tensor(load_image(s.path))) for s in samples])


# ----------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------
def run_sweep(
    model: Any,
    data: Any = None,
    platform: str | None = "auto",
    settings: Sequence[Setting] | None = None,
    tta: int = 1,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    threshold: float = 0.5,
    name: str | None = None,
    max_images: int | None = None,
) -> SweepResult:
    """Score the test images under every setting of a sweep.

    Args:
        model: anything :func:`load_scorer` accepts (checkpoint, published state_dict, .onnx, .tflite, model).
        data: dataset root or :class:`~ladeda_lib.data.DatasetIndex` (None = the toy set).
        platform: which test platform (see :func:`select_test_samples`; default: the training platform).
        settings: default :func:`default_sweep`. The first setting's decisions are the reference for flips,
            so keep ``clean`` first.
        tta: score each image as the mean logit over this many degraded copies (:func:`tta_score`).
        cache_dir: image-tensor cache (None = decode every time).
        max_images: score at most this many images, half of each class, the first ones in file order (a
            quicker, still deterministic sweep for slow models).

    Returns:
        :class:`SweepResult` with one row per setting: ``ap``, ``auc``, ``accuracy`` (threshold on the
        probability), ``flip_rate`` (share of images whose decision differs from the first setting's).
    Introduced in notebook 09.
    """
    from tqdm.auto import tqdm

    from ladeda_lib.data.tensors import load_tensors
    from ladeda_lib.evaluation import binary_metrics

    settings = list(settings) if settings is not None else default_sweep()
    if not settings:
        raise ValueError("the sweep needs at least one setting")
    score, model_name = load_scorer(model, batch_size)
    samples, root, chosen = select_test_samples(data, platform)
    if max_images is not None:
        per_class = max(1, int(max_images) // 2)
        samples = [s for s in samples if s.label == 0][:per_class] + [s for s in samples if s.label == 1][:per_class]
    tensors = load_tensors(samples, cache_dir=cache_dir, progress=progress)
    labels = tensors.labels.numpy()
    result = SweepResult(name or model_name, root, chosen, len(samples), int(tta))
    reference: np.ndarray | None = None
    for setting in tqdm(settings, desc="robustness", unit="setting", disable=not progress):
        images = _degraded(setting, tensors.images, tensors.samples)
        logits = tta_score(score, images, tta)
        decisions = sigmoid(logits) >= threshold
        if reference is None:
            reference = decisions
        m = binary_metrics(labels, logits, threshold)
        result.rows.append(
            {
                "family": setting.family,
                "label": setting.label,
                "x": setting.x,
                "ap": m["ap"],
                "auc": m["auc"],
                "accuracy": m["accuracy"],
                "flip_rate": float(np.mean(decisions != reference)),
                "n": m["n"],
            }
        )
    return result


# ----------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------
def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def format_markdown(result: SweepResult, title: str = "Robustness sweep") -> str:
    """A Markdown report: what was scored, then one table row per setting."""
    where = f"test platform `{result.platform}`" if result.platform else "the whole test split"
    lines = [
        f"# {title}",
        "",
        f"Model `{result.model}` on {result.n} images of {where} of `{result.data}`"
        + (f", scores averaged over {result.tta} degraded copies (TTA)" if result.tta > 1 else "")
        + ".",
        "Flips: share of images whose decision (probability >= 0.5) differs from the clean image's.",
        "",
        "| setting | AP | AUC | accuracy | flips |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {_f(r['ap'])} | {_f(r['auc'])} | {_f(r['accuracy'])} | {_f(r['flip_rate'])} |"
        for r in result.rows
    ]
    return "\n".join(lines) + "\n"


def plot_sweeps(results: dict[str, SweepResult], metric: str = "ap", path: str | Path | None = None) -> Any:
    """The sweep curves of several models on one figure: one panel per family (JPEG, rescale, blur) plus a
    panel of bars for the crop and platform settings. Each model's clean value is a dashed line.

    Returns the matplotlib figure (saved to ``path`` when given). Introduced in notebook 09.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    other_labels: list[str] = []
    for k, (name, result) in enumerate(results.items()):
        color = colors[k % len(colors)]
        clean = next((r[metric] for r in result.rows if r["family"] == "clean"), None)
        for ax, family in zip(axes[:3], ("jpeg", "rescale", "blur"), strict=True):
            rows = [r for r in result.rows if r["family"] == family]
            if rows:
                ax.plot([r["x"] for r in rows], [r[metric] for r in rows], "o-", color=color, label=name)
            if clean is not None:
                ax.axhline(clean, color=color, linestyle="--", linewidth=0.8)
        others = [r for r in result.rows if r["family"] in ("crop", "platform")]
        if others:
            width = 0.8 / len(results)
            xs = np.arange(len(others)) + k * width
            axes[3].bar(xs, [r[metric] for r in others], width=width, color=color, label=name)
            other_labels = [r["label"].split(":")[0].split(" (")[0] for r in others]
    titles = {"jpeg": "JPEG recompression", "rescale": "downscale, then back to 256", "blur": "Gaussian blur"}
    for ax, family in zip(axes[:3], ("jpeg", "rescale", "blur"), strict=True):
        ax.set_title(titles[family])
        ax.set_xlabel(FAMILIES[family])
        ax.set_ylabel(metric.upper() if metric == "ap" else metric)
    axes[0].invert_xaxis()  # harsher to the right
    axes[1].invert_xaxis()
    axes[0].legend(loc="lower left", fontsize="small")
    axes[3].set_title("crop and platform chains")
    axes[3].set_xticks(np.arange(len(other_labels)) + 0.4 - 0.4 / max(1, len(results)))
    axes[3].set_xticklabels(other_labels, rotation=15, fontsize="small")
    axes[3].set_ylabel(metric.upper() if metric == "ap" else metric)
    fig.suptitle(f"{metric.upper() if metric == 'ap' else metric} under degradations (dashed: clean)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def write_outputs(result: SweepResult, output: str | Path) -> dict[str, Path]:
    """Write ``robustness.md``, ``robustness.json`` and ``robustness.png`` into ``output``; returns their paths."""
    import matplotlib.pyplot as plt

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "robustness.md", "json": out / "robustness.json", "png": out / "robustness.png"}
    paths["md"].write_text(format_markdown(result))
    write_json(paths["json"], result.to_dict())
    fig = plot_sweeps({Path(result.model).name: result}, path=paths["png"])
    plt.close(fig)
    return paths


def deployment_table(
    model: Any, data: Any = None, cache_dir: str | Path | None = None, progress: bool = False
) -> tuple[SweepResult, str]:
    """The pipeline report's small robustness table for the deployed file: clean, JPEG 50, rescale 0.5.

    Returns the :class:`SweepResult` and a Markdown table (setting, AP, accuracy, flips). Introduced in
    notebook 09.
    """
    settings = [
        Setting("clean", (), None, "clean"),
        Setting("jpeg", (Degradation("jpeg", 50),), 50.0),
        Setting("rescale", (Degradation("rescale", 0.5),), 0.5),
    ]
    result = run_sweep(model, data, settings=settings, cache_dir=cache_dir, progress=progress)
    lines = ["| setting | AP | accuracy | decisions flipped |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {_f(r['ap'])} | {_f(r['accuracy'])} | {_f(r['flip_rate'])} |" for r in result.rows]
    return result, "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# CLI: ladeda robustness
# ----------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from ladeda_lib.paths import project_root

    result = run_sweep(
        args.model,
        args.data,
        platform=args.platform,
        tta=args.tta,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    out = Path(args.output) if args.output else project_root() / "runs" / "robustness"
    paths = write_outputs(result, out)
    print(format_markdown(result))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ladeda robustness``."""
    p = subparsers.add_parser(
        "robustness",
        help="AP, accuracy and flipped decisions under JPEG, rescale, blur, crop and platform chains",
        description="Score the test images under a sweep of deterministic degradations; writes robustness.md, "
        "robustness.json and robustness.png into --output.",
    )
    p.add_argument("--model", required=True, help="checkpoint (.pt/.pth, ours or published), .onnx or .tflite file")
    p.add_argument("--data", default=None, help="dataset root (default: the toy set, generated if absent)")
    p.add_argument("--output", default=None, help="output folder (default runs/robustness)")
    p.add_argument(
        "--platform",
        default="auto",
        help="test platform to score: a name, 'all', or 'auto' (default: the training platform, reddit, if present)",
    )
    p.add_argument("--tta", type=int, default=1, help="average each score over N degraded copies (default 1: off)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="image-tensor cache folder (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=_run)
