"""The report of ``ladeda pipeline``: ``report.md`` with its figures and ``metrics.json``, from what the stages
(:mod:`ladeda_lib.pipeline.stages`) measured. Every number in it was measured in the run it reports.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.contract import sigmoid
from ladeda_lib.jsonio import write_json


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def describe_machine() -> str:
    """CPU model, visible cores, torch version and thread count (for reports and benchmarks)."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _ap_figure(path: Path, table: dict[str, dict[str, float]], groups: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)), 3.6))
    for i, name in enumerate(names):
        values = [table[name].get(g, float("nan")) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, groups)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("average precision")
    ax.set_title("AP per split and platform")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap_examples(index: Any, model_path: Path, folder: Path, count: int) -> list[tuple[str, Path]]:
    from ladeda_lib.inference import InferencePipeline
    from ladeda_lib.viz import visualize_heatmap

    pipe = InferencePipeline(model_path)
    test = index.select(split="test") or index.select(split="val")
    picks = []
    real = [s for s in test if s.label == 0]
    full = [s for s in test if s.label == 1 and s.mask is None]
    spliced = [s for s in test if s.label == 1 and s.mask is not None]
    for kind, pool in (("real", real), ("fake", full), ("spliced fake", spliced)):
        if pool and len(picks) < count:
            picks.append((kind, pool[0]))
    out = []
    for kind, sample in picks:
        result = pipe.predict(sample.path)
        png = folder / f"heatmap_{kind.replace(' ', '_')}.png"
        visualize_heatmap(sample.path, result, png, mask=sample.mask)
        out.append((f"{kind}: {Path(sample.path).name} (p(fake) = {result['fake_probability']:.2f})", png))
    return out


def _setting(key: str, value: Any, data_root: Path, out: Path) -> str:
    """A settings-table cell: defaults that were resolved at run time say what they resolved to."""
    if value is None and key == "data":
        return f"default: the toy dataset (`{data_root}`)"
    if value is None and key == "output":
        return f"default: `{out}`"
    return str(value)


def write_report(
    out: Path,
    cfg: Any,
    index: Any,
    metrics: dict[str, dict[str, Any]],
    exported: dict[str, dict[str, Any]],
    verification: dict[str, Any],
    artifacts: dict[str, Path],
    timings: dict[str, float],
    notes: list[str],
    robustness: tuple[str, str] | None = None,
    audits: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.md``, ``metrics.json`` and the figures under ``out``; return the report path.

    ``cfg`` is the run's :class:`~ladeda_lib.pipeline.stages.PipelineConfig` (its settings are listed);
    ``robustness`` is (deployed file name, Markdown table of :func:`ladeda_lib.robustness.deployment_table`);
    ``audits`` is :func:`audit_students`'s result.
    """
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    groups = list(next(iter(metrics.values()))["groups"])
    ap_table: dict[str, dict[str, float]] = {
        name: {g: m["groups"][g]["ap"] for g in groups} for name, m in metrics.items()
    }
    for name, per_group in exported.items():
        ap_table[name] = {g: per_group[g]["ap"] for g in groups if g in per_group}
    acc_table = {name: {g: m["groups"][g]["accuracy"] for g in groups} for name, m in metrics.items()}
    for name, per_group in exported.items():
        acc_table[name] = {g: per_group[g]["accuracy"] for g in groups if g in per_group}
    ap_png = _ap_figure(figures / "ap_per_platform.png", ap_table, groups)
    heatmaps = _heatmap_examples(index, artifacts["deployed"], figures, cfg.heatmap_examples)

    def table(values: dict[str, dict[str, float]]) -> list[str]:
        rows = ["| model | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
        rows += [f"| {name} | " + " | ".join(_fmt(v.get(g)) for g in groups) + " |" for name, v in values.items()]
        return rows

    lines = [
        "# ladeda pipeline report",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by `ladeda pipeline` on {describe_machine()}.",
        f"Every number below was measured in this run. Total time: {sum(timings.values()):.0f} s.",
        "",
        *[f"**{note}**" for note in notes if note.startswith("verification FAILED")],
        *teacher_warnings(metrics),
        "",
        "## Data",
        "",
        f"`{index.root}` ({index.layout} layout)",
        "",
        "```",
        index.summary(),
        "```",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {_setting(k, v, index.root, out)} |" for k, v in asdict(cfg).items() if k not in {"progress"}],
        "",
        "Notes: " + ("; ".join(notes) if notes else "none"),
        "",
        "## Detection: average precision per split and platform",
        "",
        "Training uses the `train` split only (the training platform); `test/<platform>` are held out.",
        "",
        *table(ap_table),
        "",
        f"![AP per platform](figures/{ap_png.name})",
        "",
        "## Accuracy at threshold 0.5",
        "",
        *table(acc_table),
        "",
        "## mAP over test platforms and heatmap localisation",
        "",
        "| model | mAP (test platforms) | pixel AUC on spliced fakes |",
        "|---|---:|---:|",
    ]
    for name, m in metrics.items():
        loc = m.get("localisation") or {}
        lines.append(f"| {name} | {_fmt(m.get('mAP'))} | {_fmt(loc.get('pixel_auc'))} |")
    reliability_png = _reliability_figure(figures / "reliability.png", metrics)
    if reliability_png is not None:
        lines += [
            "",
            "## Calibration: reliability on the test images",
            "",
            "Fraction of fakes against the predicted p(fake), per probability bin; the diagonal is perfect calibration "
            "and each legend entry gives the expected calibration error (ECE).",
            "",
            f"![reliability diagram](figures/{reliability_png.name})",
        ]
    if robustness is not None:
        lines += [
            "",
            f"## Robustness of the deployed file (`{robustness[0]}`, training platform's test images)",
            "",
            "AP and accuracy after recompressing every test image at JPEG quality 50 and after rescaling it to half "
            "size (and back through the shared input geometry); flipped = decisions that differ from the clean image's.",
            "",
            robustness[1].strip(),
        ]
    if audits:
        lines += ["", *audit_section(audits)]
    lines += ["", "## Sample heatmaps (deployed student)", ""]
    for caption, png in heatmaps:
        lines += [f"**{caption}**", "", f"![{caption}](figures/{png.name})", ""]
    md_report = out / "export" / "student_verification.md"
    lines += ["## Exported files: parity, size and latency", ""]
    if md_report.exists():
        lines += [md_report.read_text().strip(), ""]
    lines += [
        "## Stage timings",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()],
        "",
        "## Artifacts",
        "",
        *[f"- {name}: `{path}`" for name, path in artifacts.items()],
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    payload = {"models": metrics, "exported": exported, "verification": verification, "timings": timings}
    if audits:
        payload["audit"] = {"photographs": audits["photographs"], "models": audits["models"]}
    write_json(out / "metrics.json", payload)
    return report


def _reliability_figure(path: Path, metrics: dict[str, dict[str, Any]]) -> Path | None:
    """The reliability diagram of every model on the test split (from ``evaluate_model(keep_scores=True)``)."""
    import numpy as np

    from ladeda_lib.viz import plot_reliability

    curves = {}
    for name, m in metrics.items():
        scores = (m.get("scores") or {}).get("test")
        if scores:
            logits = np.asarray(scores["logits"], dtype=np.float64)
            curves[name] = (np.asarray(scores["labels"]), sigmoid(logits))
    if not curves:
        return None
    fig = plot_reliability(curves, title="Reliability on the test images")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def teacher_warnings(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Bold lines for the top of the report when distillation did not pay: a teacher or distilled student
    whose test mAP is below the label-only student's."""
    base = metrics.get("label-only student", {}).get("mAP")
    if base is None or (isinstance(base, float) and math.isnan(base)):
        return []
    lines = []
    for name in ("teacher", "single-stage student", "two-stage student"):
        value = metrics.get(name, {}).get("mAP")
        if value is not None and not math.isnan(value) and value < base:
            lines.append(
                f"**Warning: the {name} (test mAP {value:.3f}) is weaker than the label-only student ({base:.3f}): "
                f"{'distilling from it cannot help' if name == 'teacher' else 'distillation did not pay here'}.**"
            )
    return lines


#: The audit's shortcut tests the report lists (the share of real photographs whose decision changes).
AUDIT_COLUMNS = ("JPEG 95", "JPEG 75", "resize x0.5")


def audit_students(students: dict[str, Path], data_root: Path, folder: Path) -> dict[str, Any]:
    """The false-positive audit (:func:`ladeda_lib.audit.audit_photographs`) of each student on real photographs
    it never trained on: a photo world's held-out test photographs, else the photographs shipped in installed
    packages (no toy set of the scenes world contains any). Writes ``folder/<name>/audit.*``; returns the
    photographs' source and each model's summary."""
    from ladeda_lib.audit import audit_photographs, bundled_photographs
    from ladeda_lib.data.photos import heldout_dir

    held = heldout_dir(data_root)
    if (Path(data_root) / "photos.json").exists() and held.is_dir():
        real, source = held, "the photo world's held-out test photographs"
    else:
        real, source = folder / "photographs", "the photographs shipped in installed packages"
        bundled_photographs(real)
    models = {}
    for name, path in students.items():
        report = audit_photographs(path, real, progress=False)
        report.write(folder / name.split()[0])
        models[name] = report.summary()
    return {"photographs": source, "folder": real, "models": models}


def audit_table(audits: dict[str, Any]) -> list[str]:
    """The audit as a Markdown table: per student, the false-positive rate at threshold 0.5 and the share of
    decisions each shortcut test (:data:`AUDIT_COLUMNS`) changes. ``audits`` is :func:`audit_students`'s result."""
    pct = "{:.0%}".format
    lines = [
        "| student | called fake | " + " | ".join(f"changed by {c}" for c in AUDIT_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(AUDIT_COLUMNS),
    ]
    for name, s in audits["models"].items():
        changed = " | ".join(pct(s["transforms"][c]["decision_changed"]) for c in AUDIT_COLUMNS)
        lines.append(f"| {name} | {pct(s['false_positive_rate'])} | {changed} |")
    return lines


def audit_section(audits: dict[str, Any]) -> list[str]:
    """The report's audit section: a heading, what was scored, and :func:`audit_table`."""
    return [
        "## Real photographs: false-positive audit",
        "",
        f"Each student scores {audits['photographs']} ({next(iter(audits['models'].values()))['n_real']}, all real) "
        "at threshold 0.5, as they are and after each shortcut test; `ladeda audit` gives the per-photograph table "
        "(here under `audit/`).",
        "",
        *audit_table(audits),
    ]
