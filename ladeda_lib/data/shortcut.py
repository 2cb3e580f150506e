"""The shortcut check: can a detector that sees only *global* image statistics tell real from fake?

LaDeDa exists because generation traces are local: a 9×9 patch of a generated image carries them, whatever
the scene. A dataset in which fakes also differ globally — blurrier, noisier, another colour cast — teaches
the wrong lesson, because any classifier of brightness or sharpness then "detects" fakes too. This module
measures that risk on any dataset:

* :func:`global_statistics` — a handful of classic whole-image statistics per image (colour means,
  contrast, saturation, sharpness as log Laplacian variance, a noise-level estimate, high-pass energy,
  gradient energy): uint8 (N, 3, S, S) → float64 (N, F).
* :func:`standardized_mean_differences` — per statistic, (mean fake − mean real) / pooled standard
  deviation (Cohen's d). |d| ≤ 0.2 is conventionally a "small" effect: the classes overlap almost entirely.
* :func:`global_baseline` — a logistic regression on those statistics, trained on one set and scored (AP)
  on another: the detector a shortcut would give for free.

Introduced in notebook 02.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Names of the columns :func:`global_statistics` returns, in order.
STATISTICS = (
    "mean_red",
    "mean_green",
    "mean_blue",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "noise_level",
    "highpass_energy",
    "gradient_energy",
)

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
# Immerkær's noise estimator: the difference of two Laplacians cancels locally linear structure.
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _filter(gray: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(gray, kernel.to(gray.dtype)[None, None])


@torch.no_grad()
def global_statistics(images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Whole-image statistics of uint8 images: (N, 3, S, S) → float64 (N, len(STATISTICS)).

    Columns (see :data:`STATISTICS`): mean of each channel and of the luminance, luminance standard
    deviation (contrast), mean HSV saturation, log variance of the Laplacian (sharpness), Immerkær's
    noise standard deviation, log energy of the image minus its 3×3 box blur (high-pass energy) and log mean
    Sobel gradient magnitude. All on the 0–255 scale, computed on the images as the models see them.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W); got {tuple(images.shape)}")
    rows = []
    box = torch.full((3, 3), 1.0 / 9.0)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].double()
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        mx, mn = x.amax(dim=1), x.amin(dim=1)
        saturation = torch.where(mx > 0, (mx - mn) / mx.clamp(min=1e-6), torch.zeros_like(mx))
        lap = _filter(gray, _LAPLACE)
        noise = _filter(gray, _IMMERKAER).abs().mean(dim=(1, 2, 3)) * float(np.sqrt(np.pi / 2) / 6.0)
        high = gray[:, :, 1:-1, 1:-1] - _filter(gray, box)
        gx, gy = _filter(gray, _SOBEL_X), _filter(gray, _SOBEL_X.T.contiguous())
        grad = torch.sqrt(gx * gx + gy * gy).mean(dim=(1, 2, 3))
        rows.append(
            torch.stack(
                [
                    x[:, 0].mean(dim=(1, 2)),
                    x[:, 1].mean(dim=(1, 2)),
                    x[:, 2].mean(dim=(1, 2)),
                    gray.mean(dim=(1, 2, 3)),
                    gray.std(dim=(1, 2, 3)),
                    saturation.mean(dim=(1, 2)),
                    torch.log(lap.var(dim=(1, 2, 3)) + 1e-6),
                    noise,
                    torch.log((high * high).mean(dim=(1, 2, 3)) + 1e-6),
                    torch.log(grad + 1e-6),
                ],
                dim=1,
            )
        )
    return torch.cat(rows).numpy()


def standardized_mean_differences(stats: np.ndarray, labels: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Cohen's d per statistic: (mean over fakes − mean over reals) / pooled standard deviation.

    ``stats`` (N, F) from :func:`global_statistics`, ``labels`` (N,) with 0 = real, 1 = fake. Returns
    ``{statistic name: d}``. Raises ``ValueError`` unless both classes have at least two images.
    """
    labels = np.asarray(labels).reshape(-1)
    real, fake = stats[labels == 0], stats[labels == 1]
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"need at least two real and two fake images; got {len(real)} real, {len(fake)} fake")
    pooled = np.sqrt(
        ((len(real) - 1) * real.var(axis=0, ddof=1) + (len(fake) - 1) * fake.var(axis=0, ddof=1))
        / (len(real) + len(fake) - 2)
    )
    d = (fake.mean(axis=0) - real.mean(axis=0)) / np.maximum(pooled, 1e-12)
    names = STATISTICS if stats.shape[1] == len(STATISTICS) else tuple(f"stat_{i}" for i in range(stats.shape[1]))
    return {name: float(v) for name, v in zip(names, d, strict=True)}


@dataclass
class BaselineResult:
    """A global-statistics classifier's scores: AP and accuracy on the test images, and its fitted model."""

    ap: float
    accuracy: float
    scores: np.ndarray
    model: object


def global_baseline(
    train_stats: np.ndarray,
    train_labels: np.ndarray | torch.Tensor,
    test_stats: np.ndarray,
    test_labels: np.ndarray | torch.Tensor,
) -> BaselineResult:
    """Logistic regression on standardised global statistics: fit on train, score test (AP, accuracy at 0.5).

    Stats (N, F) from :func:`global_statistics`; labels (N,) 0 = real, 1 = fake. This is the shortcut
    detector: if it reaches a high AP the fakes differ globally and a patch detector's success proves little.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, average_precision_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train, y_test = np.asarray(train_labels).reshape(-1), np.asarray(test_labels).reshape(-1)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(train_stats, y_train)
    scores = model.predict_proba(test_stats)[:, 1]
    return BaselineResult(
        float(average_precision_score(y_test, scores)),
        float(accuracy_score(y_test, scores >= 0.5)),
        scores,
        model,
    )
