"""Heatmap figures and the ipywidgets heatmap explorer.

A LaDeDa result carries a *patch map*: one logit per image patch (126×126 for the student, 31×31 for the
teacher at 256×256). To show where the evidence is, the map is placed back on the image by the
receptive-field geometry (:func:`ladeda_lib.geometry.upsample_patch_map`: each input pixel gets the mean
logit of the patches that see it) on the 256×256 model grid, and that grid is mapped onto the original
image by the same (non aspect-preserving) resize that made the model input. Patch logits are shown as
patch fake-probabilities (their sigmoid), so every figure shares one 0–1 colour scale.

Rendering lives in plain functions that return matplotlib figures (:func:`render_heatmap`) or PNG bytes
(:func:`figure_to_png`); :class:`HeatmapExplorer` only wires widgets to them, so tests drive its controls
programmatically and compare what was rendered. matplotlib and ipywidgets are imported inside functions.
Introduced in notebook 06.
"""

from __future__ import annotations

import functools
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ladeda_lib.contract import sigmoid
from ladeda_lib.data.images import load_mask
from ladeda_lib.geometry import INPUT_GEOMETRY, PatchGeometry, upsample_patch_map
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.models import LaDeDa, TinyLaDeDa

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from PIL import Image

#: Colormaps offered by the explorer (all perceptually ordered except "jet", which learners know).
COLORMAPS = ("inferno", "viridis", "magma", "coolwarm", "jet")
#: Image filters of the explorer.
FILTERS = ("all", "real", "fake", "misclassified")


@functools.cache
def _default_geometries() -> tuple[PatchGeometry, ...]:
    # Geometry depends only on the layer layout, not on the width: a width-1 teacher is enough.
    return TinyLaDeDa().geometry(), LaDeDa(width=1).geometry()


def fallback_geometry(grid: int, input_size: int = INPUT_GEOMETRY.image_size) -> PatchGeometry:
    """The geometry of the *default* student (``right_diag``) or teacher whose grid at ``input_size`` is ``grid``.

    Only for a bare patch map handed to :func:`place_heatmap` without its geometry: results of
    :class:`~ladeda_lib.inference.InferencePipeline` carry their own (from the model, or the exported file's
    sidecar). A student with another preprocessing has the same grid but another offset — pass its geometry.
    """
    for geometry in _default_geometries():
        if geometry.grid_size(input_size) == grid:
            return geometry
    raise ValueError(
        f"no default model gives a {grid}×{grid} patch grid at {input_size}×{input_size}; pass geometry= "
        "(model.geometry(), or the result's 'geometry')"
    )


def to_display_image(image: Any, max_side: int | None = None) -> Image.Image:
    """Anything :func:`ladeda_lib.data.load_image` accepts, or a preprocessed (3, 256, 256) tensor, → RGB PIL.

    ``max_side`` shrinks large images (aspect kept) for on-screen rendering.
    """
    from PIL import Image

    from ladeda_lib.data import load_image

    if isinstance(image, torch.Tensor):
        x = image.detach().cpu()
        x = x[0] if x.dim() == 4 else x
        if x.dtype == torch.uint8:
            arr = x.permute(1, 2, 0).numpy()
        else:
            arr = (INPUT_GEOMETRY.denormalize(x.float()).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        pil = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    elif isinstance(image, Image.Image) and image.mode == "RGB" and image.getexif().get(0x0112, 1) == 1:
        pil = image  # already decoded and upright (what the inference pipeline keeps): not decoded again
    else:
        pil = load_image(image)
    if max_side is not None and max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BICUBIC)
    return pil


def place_heatmap(
    patch_heatmap: np.ndarray | torch.Tensor,
    image_size: tuple[int, int],
    geometry: PatchGeometry | None = None,
    input_size: int = INPUT_GEOMETRY.image_size,
) -> np.ndarray:
    """Patch logits (h, w) → patch fake-probabilities on the image's own pixels, (H, W) float32 in [0, 1].

    ``image_size`` is (W, H). The map is placed on the ``input_size`` model grid by the receptive-field
    ``geometry`` (pass the model's, or a result's ``"geometry"``; without one: :func:`fallback_geometry`),
    then resized to (H, W) — the inverse of the resize that produced the model input.
    """
    patch = torch.as_tensor(np.asarray(patch_heatmap, dtype=np.float32))
    if patch.dim() != 2:
        raise ValueError(f"a patch heatmap is 2-D (h, w), got shape {tuple(patch.shape)}")
    geometry = geometry or fallback_geometry(int(patch.shape[-1]), input_size)
    width, height = image_size
    placed = upsample_patch_map(patch, geometry, input_size, out_hw=(int(height), int(width)))
    return sigmoid(placed.numpy()).astype(np.float32)


def render_heatmap(
    image: Any,
    result: Mapping[str, Any],
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
    threshold: float | None = None,
    mask: Any = None,
    geometry: PatchGeometry | None = None,
    show_histogram: bool = False,
    title: str | None = None,
    max_side: int | None = None,
) -> Figure:
    """The heatmap figure: the image, the patch map overlaid on it with a colorbar, and the score.

    Args:
        image: the image the result belongs to (path, PIL, array or preprocessed tensor).
        result: a dict from :meth:`InferencePipeline.predict` (``patch_heatmap`` may be ``None``: the overlay
            panel then says so).
        alpha: overlay opacity in [0, 1]. cmap: matplotlib colormap name.
        threshold: decision threshold shown in the title and the histogram (default: the result's).
        mask: ground-truth mask of a spliced fake (white = generated), drawn as an outline.
        geometry: patch geometry (default: the result's ``"geometry"``, see :func:`place_heatmap`).
        show_histogram: add a third panel with the histogram of patch fake-probabilities.
        title: figure title (default: the verdict).
        max_side: shrink the image to this longest side before drawing (the placement is unchanged).

    Returns:
        A matplotlib ``Figure`` (not registered with pyplot; :func:`figure_to_png` turns it into bytes).
    """
    from matplotlib.figure import Figure

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    pil = to_display_image(image, max_side)
    threshold = float(result["threshold"] if threshold is None else threshold)
    probability = float(result["fake_probability"])
    verdict = "FAKE" if probability >= threshold else "REAL"  # at the figure's threshold (the explorer moves it)
    if result.get("verdict") == "unsure":
        verdict = "UNSURE"
    heat = result.get("patch_heatmap")
    placed = None if heat is None else place_heatmap(heat, pil.size, geometry or result.get("geometry"))

    panels = 3 if show_histogram else 2
    aspect = pil.height / pil.width
    fig = Figure(figsize=(4.2 * panels, 4.2 * min(max(aspect, 0.5), 1.6) + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(1, panels, width_ratios=[1, 1.15, 0.9][:panels])
    axes[0].imshow(pil)
    axes[0].set_title(f"image {pil.width}×{pil.height}" if max_side is None else "image")
    axes[1].imshow(pil)
    if placed is not None:
        im = axes[1].imshow(placed, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="nearest")
        cbar = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
        cbar.set_label("patch fake probability")
        axes[1].set_title(f"patch map ({heat.shape[0]}×{heat.shape[1]} patches)")
    else:
        axes[1].set_title("no patch map (exported without patch output)")
    if mask is not None:
        gt = load_mask(mask, pil.size).numpy()
        if gt.any():
            axes[1].contour(gt.astype(np.float32), levels=[0.5], colors=["#00ff66"], linewidths=1.5)
            axes[1].plot([], [], color="#00ff66", label="generated region (ground truth)")
            axes[1].legend(loc="lower right", fontsize=7, framealpha=0.7)
    for ax in axes[:2]:
        ax.set_axis_off()
    if show_histogram:
        ax = axes[2]
        if heat is not None:
            patch_probs = sigmoid(np.asarray(heat, dtype=np.float32)).ravel()
            ax.hist(patch_probs, bins=40, range=(0.0, 1.0), color="#4c72b0")
            ax.set_yscale("log")
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
        ax.axvline(probability, color="#dd4444", label=f"image score {probability:.3f}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("patch fake probability")
        ax.set_ylabel("patches (log scale)")
        ax.set_title("patch scores")
        ax.legend(fontsize=7, loc="upper center")
    fig.suptitle(title or f"fake probability {probability:.3f} → {verdict} (threshold {threshold:.2f})")
    return fig


def figure_to_png(fig: Figure, dpi: int | None = None) -> bytes:
    """Render a figure to PNG bytes (deterministic: no timestamp/software metadata)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, metadata={"Software": None})
    return buffer.getvalue()


def visualize_heatmap(
    image: Any,
    result: Mapping[str, Any],
    out_path: str | os.PathLike,
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
    geometry: PatchGeometry | None = None,
    mask: Any = None,
    dpi: int = 100,
) -> Path:
    """Write the heatmap PNG for one prediction: image, overlay at the image's own resolution, score, colorbar.

    ``image`` is what was passed to :meth:`InferencePipeline.predict`; ``result`` its output; ``dpi`` sets the
    PNG's resolution (a notebook that embeds several uses less). Returns the path.
    Introduced in notebook 06.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = render_heatmap(image, result, alpha=alpha, cmap=cmap, geometry=geometry, mask=mask)
    out.write_bytes(figure_to_png(fig, dpi=dpi))
    return out


def plot_reliability(
    curves: Mapping[str, tuple[Any, Any]], bins: int = 10, title: str = "Reliability diagram"
) -> Figure:
    """Reliability diagram: for each model, fraction of fakes against mean p(fake) per probability bin.

    ``curves`` maps a name to ``(labels (N,) 0/1, fake probabilities (N,))``; each name's legend entry carries
    its expected calibration error (ECE). The diagonal is perfect calibration; a curve below it is
    over-confident about "fake". Works behind notebook 05.
    """
    from matplotlib.figure import Figure

    from ladeda_lib.calibration import expected_calibration_error, reliability_bins

    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    for name, (labels, probabilities) in curves.items():
        rows = [r for r in reliability_bins(labels, probabilities, bins) if r["count"]]
        ece = expected_calibration_error(labels, probabilities, bins)
        ax.plot(
            [r["confidence"] for r in rows], [r["frequency"] for r in rows], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted p(fake) in bin")
    ax.set_ylabel("fraction of fakes in bin")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# The explorer
# ----------------------------------------------------------------------------------------------------
def _as_pipeline(model: Any) -> InferencePipeline:
    return model if isinstance(model, InferencePipeline) else InferencePipeline(model)


class HeatmapExplorer:
    """An ipywidgets explorer of patch heatmaps over a dataset split, for several models.

    Controls (``explorer.controls[name]``, plain ipywidgets; set ``.value`` to drive them from code):
    ``split``, ``filter`` (all / real / fake / misclassified), ``image``, ``model``, ``opacity``,
    ``colormap``, ``threshold`` and ``mask`` (outline of the ground-truth generated region of spliced fakes).
    The view shows the image, the overlay, the histogram of patch scores and the score
    (``explorer.view`` is a PNG ``widgets.Image``, ``explorer.score`` an ``HTML`` line).
    Predictions are cached per (model, image); "misclassified" scores the whole split once per model.

    Args:
        data: a :class:`~ladeda_lib.data.DatasetIndex`, a dataset folder (:func:`~ladeda_lib.data.detect_dataset`)
            or a list of :class:`~ladeda_lib.data.Sample`.
        models: name → PatchDetector, checkpoint / .onnx / .tflite path, or :class:`InferencePipeline`
            (e.g. ``{"teacher": teacher, "student": "weights/two_stage/student_final.pt"}``).
        split: initial split (default: "test" if present, else the first).
        threshold, opacity, colormap: initial control values.
        display_size: longest side of the drawn image in pixels (rendering speed).

    Display it by leaving it as the last expression of a cell (or ``display(explorer.widget)``).
    Introduced in notebook 07.
    """

    def __init__(
        self,
        data: Any,
        models: Mapping[str, Any],
        split: str | None = None,
        threshold: float = 0.5,
        opacity: float = 0.5,
        colormap: str = "inferno",
        display_size: int = 320,
    ) -> None:
        import ipywidgets as widgets

        samples = self._samples(data)
        if not samples:
            raise ValueError("the explorer needs at least one image; the dataset given is empty")
        if not models:
            raise ValueError("the explorer needs at least one model: models={'student': model, ...}")
        self.pipelines = {str(name): _as_pipeline(model) for name, model in models.items()}
        self.by_split: dict[str, list[Any]] = {}
        for sample in samples:
            self.by_split.setdefault(str(sample.split), []).append(sample)
        splits = list(self.by_split)
        if split is None:
            split = "test" if "test" in splits else splits[0]
        if split not in self.by_split:
            raise ValueError(f"split {split!r} not in the data; available: {', '.join(splits)}")
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap {colormap!r} not offered; choose one of {', '.join(COLORMAPS)}")
        self.display_size = int(display_size)
        self._results: dict[tuple[str, str], dict[str, Any]] = {}
        self._images: dict[str, Any] = {}
        self.renders = 0

        style = {"description_width": "80px"}
        self.controls: dict[str, Any] = {
            "split": widgets.Dropdown(options=splits, value=split, description="split", style=style),
            "filter": widgets.ToggleButtons(options=list(FILTERS), value="all", description="show", style=style),
            "image": widgets.Dropdown(options=[], description="image", style=style),
            "model": widgets.Dropdown(options=list(self.pipelines), description="model", style=style),
            "opacity": widgets.FloatSlider(
                value=opacity, min=0.0, max=1.0, step=0.05, description="opacity", style=style
            ),
            "colormap": widgets.Dropdown(options=list(COLORMAPS), value=colormap, description="colormap", style=style),
            "threshold": widgets.FloatSlider(
                value=threshold, min=0.0, max=1.0, step=0.01, description="threshold", style=style
            ),
            "mask": widgets.Checkbox(value=True, description="ground-truth outline", style=style),
        }
        for name, control in self.controls.items():
            control.add_class(f"ladeda-explorer-{name}")  # stable CSS hooks (the browser test uses them)
        self.view = widgets.Image(format="png")
        self.view.add_class("ladeda-explorer-view")
        self.score = widgets.HTML()
        self.score.add_class("ladeda-explorer-score")
        c = self.controls
        self.widget = widgets.VBox(
            [
                widgets.HBox([c["split"], c["model"]]),
                c["filter"],
                c["image"],
                widgets.HBox([c["opacity"], c["threshold"]]),
                widgets.HBox([c["colormap"], c["mask"]]),
                self.score,
                self.view,
            ]
        )
        self._updating = False
        self._update_image_options()
        self.render()
        for name in ("split", "filter"):
            c[name].observe(self._on_selection_change, names="value")
        for name in ("model", "threshold"):
            c[name].observe(self._on_model_or_threshold, names="value")
        for name in ("image", "opacity", "colormap", "mask"):
            c[name].observe(self._on_view_change, names="value")

    # -- data -----------------------------------------------------------------------------------------
    @staticmethod
    def _samples(data: Any) -> list[Any]:
        if isinstance(data, str | os.PathLike):
            from ladeda_lib.data import detect_dataset

            data = detect_dataset(data)
        if hasattr(data, "samples"):
            return list(data.samples)
        if isinstance(data, Sequence):
            return list(data)
        raise TypeError(f"data must be a DatasetIndex, a dataset folder or a list of Samples, got {type(data)}")

    def result(self, model_name: str, sample: Any) -> dict[str, Any]:
        """The cached prediction of ``model_name`` for ``sample``."""
        key = (model_name, str(sample.path))
        if key not in self._results:
            self._results[key] = self.pipelines[model_name].predict(sample.path)
        return self._results[key]

    def _image(self, sample: Any) -> Any:
        key = str(sample.path)
        if key not in self._images:
            self._images[key] = to_display_image(sample.path, self.display_size)
        return self._images[key]

    def visible_samples(self) -> list[Any]:
        """Samples of the current split passing the current filter."""
        samples = self.by_split[self.controls["split"].value]
        kind = self.controls["filter"].value
        if kind == "real":
            return [s for s in samples if int(s.label) == 0]
        if kind == "fake":
            return [s for s in samples if int(s.label) == 1]
        if kind == "misclassified":
            model, threshold = self.controls["model"].value, self.controls["threshold"].value
            return [s for s in samples if (self.result(model, s)["fake_probability"] >= threshold) != bool(s.label)]
        return list(samples)

    def current_sample(self) -> Any | None:
        """The selected sample, or None when the filter leaves no image."""
        index = self.controls["image"].value
        samples = self.visible_samples()
        return samples[index] if index is not None and 0 <= index < len(samples) else None

    # -- wiring ---------------------------------------------------------------------------------------
    def _update_image_options(self) -> None:
        previous = self.current_sample() if self.controls["image"].options else None
        samples = self.visible_samples()
        options = [(f"{Path(s.path).name}  ({'fake' if int(s.label) else 'real'})", i) for i, s in enumerate(samples)]
        keep = next((i for i, s in enumerate(samples) if previous is not None and s.path == previous.path), None)
        self._updating = True
        try:
            self.controls["image"].options = options
            self.controls["image"].value = keep if keep is not None else (0 if options else None)
        finally:
            self._updating = False

    def _on_selection_change(self, _change: Any = None) -> None:
        self._update_image_options()
        self.render()

    def _on_model_or_threshold(self, _change: Any = None) -> None:
        if self.controls["filter"].value == "misclassified":
            self._update_image_options()
        self.render()

    def _on_view_change(self, _change: Any = None) -> None:
        if not self._updating:
            self.render()

    # -- rendering ------------------------------------------------------------------------------------
    def figure(self) -> Figure | None:
        """The current view as a matplotlib figure (None when no image matches the filter)."""
        sample = self.current_sample()
        if sample is None:
            return None
        c = self.controls
        model = c["model"].value
        result = self.result(model, sample)
        mask = getattr(sample, "mask", None) if c["mask"].value else None
        truth = "fake" if int(sample.label) else "real"
        return render_heatmap(
            self._image(sample),
            result,
            alpha=float(c["opacity"].value),
            cmap=c["colormap"].value,
            threshold=float(c["threshold"].value),
            mask=mask,
            geometry=result.get("geometry"),
            show_histogram=True,
            title=f"{Path(sample.path).name} (truth: {truth}) — {model}",
            max_side=self.display_size,
        )

    def render(self) -> bytes:
        """Redraw: update the PNG view and the score line; returns the PNG bytes (b"" when nothing matches)."""
        self.renders += 1
        sample = self.current_sample()
        if sample is None:
            self.view.value = b""
            self.score.value = "<b>No image matches this filter.</b>"
            return b""
        c = self.controls
        result = self.result(c["model"].value, sample)
        threshold = float(c["threshold"].value)
        probability = result["fake_probability"]
        verdict = "FAKE" if probability >= threshold else "REAL"
        truth = "fake" if int(sample.label) else "real"
        correct = "correct" if (verdict == "FAKE") == (truth == "fake") else "misclassified"
        self.score.value = (
            f"<b>{html.escape(Path(sample.path).name)}</b>: fake probability <b>{probability:.3f}</b> → "
            f"<b>{verdict}</b> at threshold {threshold:.2f} (truth: {truth}, {correct})"
        )
        png = figure_to_png(self.figure())
        self.view.value = png
        return png

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
