"""False-positive audit (``ladeda audit``): what a detector says about your own real photographs, and why.

:func:`audit_photographs` scores every real photograph as :class:`~ladeda_lib.inference.InferencePipeline` reads
it, then the same decoded image under shortcut tests (:data:`TRANSFORMS`: JPEG re-encodes, resizes, a centre crop,
an EXIF-rotated copy). A real photograph that turns "fake" after an invisible JPEG re-encode shows a model keyed
on compression history, not content. :func:`bundled_photographs`: real photographs shipped in installed packages.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ladeda_lib.data.degrade import center_crop, jpeg, rescale, to_input_size
from ladeda_lib.data.images import load_image
from ladeda_lib.data.photos import find_bundled, read_bundled
from ladeda_lib.inference import InferencePipeline, list_images
from ladeda_lib.jsonio import write_json
from ladeda_lib.models import PatchDetector


def upscale(image: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
    """Bicubic upscale: uint8 (3, H, W) → (3, round(H·factor), round(W·factor)) (``degrade.rescale`` only shrinks)."""
    size = [round(image.shape[-2] * factor), round(image.shape[-1] * factor)]
    return TF.resize(image[None].float(), size, InterpolationMode.BICUBIC)[0].round_().clamp_(0, 255).to(torch.uint8)


def exif_rotated(image: torch.Tensor) -> torch.Tensor:
    """The pixels stored turned 90° left in a PNG tagged EXIF orientation 6, decoded by :func:`load_image`.

    uint8 (3, H, W) → uint8 (3, H, W) equal to the input if the loader honours EXIF, else (3, W, H) sideways."""
    exif, buf = Image.Exif(), io.BytesIO()
    exif[0x0112] = 6  # the Orientation tag
    stored = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).transpose(Image.Transpose.ROTATE_90)
    stored.save(buf, format="PNG", exif=exif)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return TF.pil_to_tensor(load_image(decoded)).contiguous()


#: Shortcut tests, each applied to the same decoded uint8 (3, H, W) photograph. Each result then reaches the model
#: as a file does (whole-image bicubic resize to 256×256); the centre crop is already 256×256.
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "JPEG 95": lambda x: jpeg(x, 95),
    "JPEG 75": lambda x: jpeg(x, 75),
    "JPEG re-save": lambda x: jpeg(jpeg(x, 95), 95),  # JPEG 95 of a decoded JPEG 95
    "resize x0.5": lambda x: rescale(x, 0.5),
    "resize x2": upscale,
    "centre crop 256": center_crop,
    "EXIF orientation": exif_rotated,
}
#: Transforms that change only the compression: a real photograph turning fake under one is a format shortcut.
FORMAT_TRANSFORMS = ("JPEG 95", "JPEG 75", "JPEG re-save")


def bundled_photographs(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Write the photographs shipped in installed packages (:func:`~ladeda_lib.data.photos.find_bundled`, offline)
    to ``folder`` as PNG. Returns (the PNG files written, notes: which were JPEG files there, which were absent).
    """
    photos, notes = find_bundled()
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = [Path(folder) / f"{p.name}.png" for p in photos]
    for photo, path in zip(photos, written, strict=True):
        Image.fromarray(read_bundled(photo)).save(path)
    jpegs = [p.name for p in photos if p.path.suffix == ".jpg"]
    note = f"{len(written)} photographs shipped in installed packages, written as PNG; {', '.join(jpegs) or 'none'}"
    return written, [note + " were JPEG files there, so their 'JPEG 95' is a second compression", *notes]


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    return {"fake_probability": row["fake_probability"], "logit": row["logit"], "verdict": row["verdict"]}


@dataclass
class AuditReport:
    """Per-photograph scores (original and each transform), unreadable files, optional fakes; ``summary()``."""

    model: str
    threshold: float
    unsure: tuple[float, float] | None
    calibrated: bool
    real_folder: str
    fake_folder: str | None = None
    photos: list[dict[str, Any]] = field(default_factory=list)  # file, format, size (W, H), original, transforms
    fakes: list[dict[str, Any]] = field(default_factory=list)  # file, fake_probability, logit, verdict
    unreadable: list[dict[str, str]] = field(default_factory=list)  # file, role ("real"/"fake"), error
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Shares of the real photographs: called fake, unsure, and per transform decision changed / turned fake,
        with the median and max |Δ fake probability|; with fakes, their detection rate and AP (originals)."""
        n, orig = len(self.photos), [p["original"] for p in self.photos]
        rows: dict[str, dict[str, Any]] = {}
        for name in TRANSFORMS:
            pairs = [(p["file"], p["original"], p["transforms"][name]) for p in self.photos]
            turned = [f for f, a, b in pairs if a["verdict"] != "fake" == b["verdict"]]
            delta = np.abs([b["fake_probability"] - a["fake_probability"] for _, a, b in pairs])
            changed = sum(a["verdict"] != b["verdict"] for _, a, b in pairs) / n
            rows[name] = dict(decision_changed=changed, turned_fake=len(turned) / n, turned_fake_files=turned)
            rows[name] |= {"median_abs_delta": float(np.median(delta)), "max_abs_delta": float(delta.max())}
        out: dict[str, Any] = {
            "n_real": n,
            "false_positive_rate": sum(o["verdict"] == "fake" for o in orig) / n,
            "unsure_rate": None if self.unsure is None else sum(o["verdict"] == "unsure" for o in orig) / n,
            "transforms": rows,
            "exif_honoured": all(p["exif_upright"] for p in self.photos),
        }
        if self.fakes:
            from ladeda_lib.evaluation import binary_metrics

            logits, labels = [o["logit"] for o in orig + self.fakes], [0] * n + [1] * len(self.fakes)
            ap = binary_metrics(labels, logits, self.threshold)["ap"]
            out |= {"n_fake": len(self.fakes), "ap": ap if np.isfinite(ap) else None}
            out["detection_rate"] = sum(f["verdict"] == "fake" for f in self.fakes) / len(self.fakes)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-safe (plain floats, lists, strings, None)."""
        return asdict(self) | {"summary": self.summary()}

    def markdown(self) -> str:
        """``audit.md``: the rates, the transform table, the format-shortcut verdict, then one row per photograph."""
        s, pct = self.summary(), "{:.1%}".format
        band = f"unsure band {self.unsure[0]:g}-{self.unsure[1]:g}" if self.unsure else "no unsure band"
        cal = "calibrated" if self.calibrated else "no calibration record: raw sigmoid"
        shortcut = [f"{f} after {t}" for t in FORMAT_TRANSFORMS for f in s["transforms"][t]["turned_fake_files"]]
        lines = [
            "# False-positive audit on real photographs\n",
            f"Model `{self.model}` ({cal}), threshold {self.threshold:g}, {band}; {s['n_real']} real photographs "
            f"from {self.real_folder}.\n",
            f"- **False-positive rate: {pct(s['false_positive_rate'])}** of the real photographs are called fake.",
        ]
        if s["unsure_rate"] is not None:
            lines.append(f"- **Unsure:** {pct(s['unsure_rate'])} fall in the unsure band.")
        if self.fakes:
            ap = "-" if s["ap"] is None else f"{s['ap']:.3f}"
            lines.append(f"- **Fakes** ({s['n_fake']}): detection rate {pct(s['detection_rate'])}, AP {ap}.")
        lines += ["", "| shortcut test | decision changed | turned fake | median abs Δp | max abs Δp |", "|---" * 5]
        for k, r in s["transforms"].items():
            deltas = f"{r['median_abs_delta']:.3f} | {r['max_abs_delta']:.3f}"
            lines.append(f"| {k} | {pct(r['decision_changed'])} | {pct(r['turned_fake'])} | {deltas} |")
        lines.append(  # the format-shortcut verdict, in words
            f"\n**Format shortcut:** real photographs turn fake after nothing but a JPEG re-encode of the same pixels "
            f"({', '.join(shortcut)}): the model reacts to the file's compression, not to what the picture shows."
            if shortcut
            else "\nNo real photograph turns fake after a JPEG re-encode alone: no format shortcut seen here."
        )
        lines.append(
            "The image loader honours EXIF orientation: the rotated copy decodes to the upright pixels."
            if s["exif_honoured"]
            else "**The image loader ignores EXIF orientation**: a rotated photograph reaches the model sideways."
        )
        lines += [f"Note: {note}" for note in self.notes]
        lines += ["", f"| photograph | format | original | {' | '.join(TRANSFORMS)} |", "|---" * 10]
        for p in self.photos:
            cells = [p["original"], *p["transforms"].values()]
            scores = " | ".join(f"{c['fake_probability']:.3f} {c['verdict']}" for c in cells)
            lines.append(f"| {p['file']} | {p['format']} | {scores} |")
        lines += ["\nUnreadable files (skipped):\n"] * bool(self.unreadable)
        lines += [f"- `{u['file']}` ({u['role']}): {u['error']}" for u in self.unreadable]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write ``audit.md``, ``audit.json`` and ``audit.png`` (each real photograph's fake probability, original
        against each transform, threshold dashed) into ``folder`` (created); returns their paths."""

        import matplotlib.pyplot as plt

        Path(folder).mkdir(parents=True, exist_ok=True)
        paths = {kind: Path(folder) / f"audit.{kind}" for kind in ("md", "json", "png")}
        paths["md"].write_text(self.markdown())
        write_json(paths["json"], self.to_dict())
        fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(self.photos) + 3), 4.5))
        x = np.arange(len(self.photos))
        for k, name in enumerate(TRANSFORMS):
            p = [photo["transforms"][name]["fake_probability"] for photo in self.photos]
            ax.plot(x + (k - len(TRANSFORMS) / 2) * 0.07, p, "o", ms=4, label=name)
        ax.plot(x, [p["original"]["fake_probability"] for p in self.photos], "ks", ms=7, label="original")
        ax.axhline(self.threshold, color="red", linestyle="--", label=f"threshold {self.threshold:g}")
        if self.unsure:
            ax.axhspan(*self.unsure, color="grey", alpha=0.2, label="unsure band")
        ax.set_xticks(x, [Path(p["file"]).stem for p in self.photos], rotation=45, ha="right", fontsize="small")
        title = f"Real photographs scored by {Path(self.model).name}: original vs shortcut tests"
        ax.set(ylim=(-0.03, 1.03), xlabel="real photograph", ylabel="fake probability", title=title)
        ax.legend(fontsize="x-small", ncol=2)
        fig.tight_layout()
        fig.savefig(paths["png"], dpi=100)
        plt.close(fig)
        return paths


def resolve_model(model: PatchDetector | str | os.PathLike) -> PatchDetector | Path:
    """A model, a model file, or a registry name (``toy-student-augmented``) → the model or its file."""
    from ladeda_lib.registry import REGISTRY

    if isinstance(model, PatchDetector) or Path(model).exists():
        return model if isinstance(model, PatchDetector) else Path(model)
    if str(model) not in REGISTRY:
        raise FileNotFoundError(f"--model {model}: no such file, nor a registry name ({', '.join(REGISTRY)})")
    if not REGISTRY[str(model)].available():
        raise FileNotFoundError(f"--model {model}: a registry name, but {REGISTRY[str(model)].path} is absent")
    return REGISTRY[str(model)].path


def audit_photographs(
    model: PatchDetector | str | os.PathLike,
    real_folder: str | os.PathLike,
    fake_folder: str | os.PathLike | None = None,
    threshold: float = 0.5,
    unsure: tuple[float, float] | None = None,
    progress: bool = True,
) -> AuditReport:
    """Score every real photograph under :data:`TRANSFORMS` (and the fakes as they are) with one pipeline.

    ``model``: a :class:`PatchDetector`, a ``.pt``/``.pth``/``.onnx``/``.tflite`` file or a registry name. Each
    image is decoded by :func:`load_image`, each view brought to uint8 (3, 256, 256) and scored with ``threshold``
    and the ``unsure`` band (probabilities). Unreadable files are listed, never fatal. ``FileNotFoundError`` /
    ``ValueError`` for a missing folder, one without image files, or one where no image could be read."""
    from tqdm.auto import tqdm

    real_files = list_images(real_folder)
    fake_files = list_images(fake_folder) if fake_folder is not None else []
    pipe = InferencePipeline(resolve_model(model), threshold=threshold, unsure=unsure)
    name = str(model) if isinstance(model, str | os.PathLike) else type(model).__name__
    folders = (str(real_folder), None if fake_folder is None else str(fake_folder))
    report = AuditReport(name, pipe.threshold, pipe.unsure, pipe.calibrated, *folders)
    for path in tqdm(real_files, desc="audit", unit="photo", disable=not progress):
        file = str(path.relative_to(real_folder))
        try:
            with Image.open(path) as img:
                fmt = img.format or "?"
            image = TF.pil_to_tensor(load_image(path))  # uint8 (3, H, W), EXIF orientation applied
        except (OSError, ValueError) as err:  # ImageLoadError is a ValueError
            report.unreadable.append({"file": file, "role": "real", "error": f"{type(err).__name__}: {err}"})
            continue
        views = {name: fn(image) for name, fn in TRANSFORMS.items()}
        rows = pipe.predict_batch([to_input_size(image), *map(to_input_size, views.values())], progress=False)
        scored = {name: _scores(row) for name, row in zip(views, rows[1:], strict=True)}
        size = [int(image.shape[2]), int(image.shape[1])]  # (W, H) as decoded
        photo = dict(file=file, format=fmt, size=size, original=_scores(rows[0]), transforms=scored)
        report.photos.append(photo | {"exif_upright": bool(torch.equal(views["EXIF orientation"], image))})
    for row in pipe.predict_batch(fake_files, progress=progress) if fake_files else []:
        item = {"file": str(Path(row["source"]).relative_to(fake_folder))}  # type: ignore[arg-type]
        if row["error"] is not None:
            report.unreadable.append(item | {"role": "fake", "error": row["error"]})
        else:
            report.fakes.append(item | _scores(row))
    if not report.photos:
        raise ValueError(f"{real_folder}: none of its {len(real_files)} image files could be read")
    return report
