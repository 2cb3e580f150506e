"""``ladeda pipeline``: the whole path in one command, with a report.

data → teacher → teacher targets → single-stage student → the same student trained on labels alone (the
baseline distillation has to beat) → two-stage student → evaluation per split and platform → export to
every format with verification → ``OUTPUT/report.md`` with figures.

The teacher: the published ``weights/WildRF_LaDeDa.pth`` if a user placed it there; else, on the default toy
data, the compact teacher the project ships (see :mod:`ladeda_lib.registry`); on any other data, a compact
teacher trained on that data. The report says which, and flags a teacher that is weaker than the
label-only student at the top.

Every stage writes its artifacts under the output folder (default ``runs/pipeline``) and is skipped on
the next run when its artifact is there (``--force`` rebuilds). A failing stage stops the run with a
message naming the stage; the artifacts of earlier stages stay. Each stage calls the same library
functions the notebooks teach, so the report's numbers are the ones a learner reproduces step by step.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ladeda_lib.paths import project_root

STAGES = (
    "data",
    "teacher",
    "single-stage student",
    "label-only student",
    "two-stage student",
    "evaluation",
    "export",
    "report",
)


class PipelineError(RuntimeError):
    """A stage failed; the message names it and says what was kept."""


@dataclass
class PipelineConfig:
    """Settings of ``ladeda pipeline``. Defaults finish within about 10 minutes on a 2-core CPU (toy data).

    Training lengths are shorter than the seed's CLI defaults (50 single-stage epochs, 5 + 20 two-stage
    epochs) so that the whole path fits a laptop coffee break; the commands ``ladeda train-student`` and
    ``ladeda train-student-two-stage`` run the full schedules.
    """

    data: str | Path | None = None  # dataset root (any detected layout); None = the toy set
    output: str | Path | None = None  # None = runs/pipeline under the project root
    force: bool = False
    seed: int = 0
    device: str = "auto"
    teacher: str = "auto"  # "auto": published, else the shipped toy teacher on the toy data; "train": always train
    teacher_width: int = 16
    teacher_epochs: int = 14
    teacher_crops_per_image: int = 8
    student_epochs: int = 8
    student_batch_size: int = 32
    epochs_s1: int = 2
    epochs_s2: int = 4
    two_stage_batch_size: int = 16
    quantization: str = "all"
    calibration_count: int = 100
    latency_runs: int = 30
    heatmap_examples: int = 3
    progress: bool = True
    # Training-time augmentation of both students (AugmentConfig.parse: "off", "on" or key=value overrides).
    augment: str = "off"

    def resolved_output(self) -> Path:
        return Path(self.output) if self.output is not None else project_root() / "runs" / "pipeline"


@dataclass
class PipelineResult:
    """What a run produced: the report, the metrics and where every artifact is."""

    output: Path
    report: Path
    metrics: dict[str, Any]
    artifacts: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _say(cfg: PipelineConfig, text: str) -> None:
    if cfg.progress:
        print(text, flush=True)


def _fresh(path: Path, cfg: PipelineConfig) -> bool:
    """True when the stage must (re)build ``path``: it is missing, or --force asked for a rebuild."""
    return cfg.force or not path.exists()


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class _Run:
    """Runs the stages in order, timing each and turning a failure into a :class:`PipelineError`."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.out = cfg.resolved_output()
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        number = STAGES.index(name) + 1
        _say(self.cfg, f"\n[{number}/{len(STAGES)}] {name}")
        start = time.perf_counter()
        try:
            value = fn()
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
            raise PipelineError(
                f"stage {number}/{len(STAGES)} '{name}' failed: {type(err).__name__}: {err}\n"
                f"Artifacts of the earlier stages are kept in {self.out}; fix the cause and rerun "
                f"(finished stages are reused)."
            ) from err
        self.timings[name] = time.perf_counter() - start
        _say(self.cfg, f"    done in {self.timings[name]:.1f} s")
        return value


def run_pipeline(config: PipelineConfig | None = None) -> PipelineResult:
    """Run the whole path and write ``OUTPUT/report.md``. See :class:`PipelineConfig` for the settings."""
    from ladeda_lib.checkpoints import load_checkpoint
    from ladeda_lib.data import detect_dataset, ensure_toy_dataset
    from ladeda_lib.data.augment import AugmentConfig
    from ladeda_lib.distill import (
        StudentTrainConfig,
        TeacherTrainConfig,
        TwoStageTrainConfig,
        load_training_data,
        train_student,
        train_student_two_stage,
        train_teacher,
    )

    cfg = config or PipelineConfig()
    AugmentConfig.parse(cfg.augment)  # a bad --augment fails now, not after the teacher has trained
    run = _Run(cfg)
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cache = out / "cache"
    artifacts: dict[str, Path] = {}

    # 1. data ------------------------------------------------------------------------------------------
    def data_stage():
        root = ensure_toy_dataset(progress=cfg.progress) if cfg.data is None else Path(cfg.data)
        index = detect_dataset(root)
        _say(cfg, index.summary())
        training = load_training_data(index, cache_dir=cache, progress=cfg.progress)
        if training.note:
            run.notes.append(training.note)
        return index, training

    index, training = run.stage("data", data_stage)

    # 2. teacher ---------------------------------------------------------------------------------------
    def teacher_stage():
        from ladeda_lib.registry import get_entry, published, shipped_teacher_fits

        for entry in published("teacher") if cfg.teacher == "auto" else []:
            if entry.available():
                run.notes.append(f"teacher: the published LaDeDa from {entry.path}")
                return load_checkpoint(entry.path, expected="LaDeDa")
        shipped = get_entry("toy-teacher")
        if cfg.teacher == "auto" and shipped.available() and shipped_teacher_fits(cfg.data):
            run.notes.append(
                f"teacher: the compact LaDeDa the project ships for the default toy data ({shipped.path.name}; "
                f"`{shipped.command}`)"
            )
            return load_checkpoint(shipped.path, expected="LaDeDa")
        path = out / "teacher_compact.pt"
        if _fresh(path, cfg):
            _clear(out / "teacher_compact_run")
            tcfg = TeacherTrainConfig(
                output=path,
                width=cfg.teacher_width,
                epochs=cfg.teacher_epochs,
                crops_per_image=cfg.teacher_crops_per_image,
                seed=cfg.seed,
                device=cfg.device,
                cache_dir=cache,
            )
            ckpt = train_teacher(tcfg, data=training, progress=cfg.progress)
            run.notes.append(
                f"teacher: compact LaDeDa (width {cfg.teacher_width}) trained on this data for "
                f"{cfg.teacher_epochs} epoch(s)"
            )
        else:
            ckpt = load_checkpoint(path, expected="LaDeDa")
            run.notes.append(f"teacher: compact LaDeDa trained on this data, reused from {path}")
        return ckpt

    teacher = run.stage("teacher", teacher_stage)
    teacher.model.freeze()
    artifacts["teacher"] = teacher.path

    # 3. single-stage student (teacher targets are computed and cached on the way) ----------------------
    def single_stage():
        folder = out / "single_stage"
        final = folder / "student_final.pt"
        if _fresh(final, cfg):
            _clear(folder)
            scfg = StudentTrainConfig(
                output=folder,
                teacher=teacher.path,
                epochs=cfg.student_epochs,
                batch_size=cfg.student_batch_size,
                seed=cfg.seed,
                device=cfg.device,
                cache_dir=cache,
                augment=AugmentConfig.parse(cfg.augment),
            )
            train_student(scfg, teacher=teacher, data=training, progress=cfg.progress)
        return final

    artifacts["single_stage"] = run.stage("single-stage student", single_stage)

    # 3b. the baseline: the same student, same epochs, labels only (no teacher) ---------------------------
    def label_only_stage():
        folder = out / "label_only"
        final = folder / "student_final.pt"
        if _fresh(final, cfg):
            _clear(folder)
            scfg = StudentTrainConfig(
                output=folder,
                epochs=cfg.student_epochs,
                batch_size=cfg.student_batch_size,
                alpha_distill=0.0,
                alpha_task=1.0,
                augment=AugmentConfig.parse(cfg.augment),
                seed=cfg.seed,
                device=cfg.device,
                cache_dir=cache,
            )
            train_student(scfg, data=training, progress=cfg.progress)
        return final

    artifacts["label_only"] = run.stage("label-only student", label_only_stage)

    # 4. two-stage student -------------------------------------------------------------------------------
    def two_stage():
        folder = out / "two_stage"
        final = folder / "student_final.pt"
        if _fresh(final, cfg) or final.stat().st_mtime < artifacts["single_stage"].stat().st_mtime:
            _clear(folder)
            tcfg = TwoStageTrainConfig(
                output=folder,
                teacher=teacher.path,
                init=artifacts["single_stage"],
                epochs_s1=cfg.epochs_s1,
                epochs_s2=cfg.epochs_s2,
                batch_size=cfg.two_stage_batch_size,
                seed=cfg.seed,
                device=cfg.device,
                cache_dir=cache,
                augment=AugmentConfig.parse(cfg.augment),
            )
            train_student_two_stage(tcfg, teacher=teacher, data=training, progress=cfg.progress)
        return final

    artifacts["two_stage"] = run.stage("two-stage student", two_stage)

    # 5. evaluation ----------------------------------------------------------------------------------------
    def evaluation_stage():
        from ladeda_lib.evaluation import evaluate_model

        models = {
            "teacher": teacher.model,
            "label-only student": load_checkpoint(artifacts["label_only"]).model,
            "single-stage student": load_checkpoint(artifacts["single_stage"]).model,
            "two-stage student": load_checkpoint(artifacts["two_stage"]).model,
        }
        return {
            name: evaluate_model(model, index, cache_dir=cache, progress=cfg.progress, keep_scores=True)
            for name, model in models.items()
        }

    metrics = run.stage("evaluation", evaluation_stage)

    # 6. export ----------------------------------------------------------------------------------------------
    def export_stage():
        from ladeda_lib.export import export_model, load_export_images

        folder = out / "export"
        summary = folder / "student_verification.json"
        student_path = artifacts["two_stage"]
        if not _fresh(summary, cfg) and summary.stat().st_mtime >= student_path.stat().st_mtime:
            run.notes.append(f"exports reused from {folder}")
            stored = json.loads(summary.read_text())
            if not stored.get("passed", True):
                failed = [f["format"] for f in stored.get("formats", []) if not f.get("passed", True)]
                run.notes.append("verification FAILED for " + ", ".join(failed) + " (see the export table)")
            return stored, sorted(folder.glob("student*.tflite")), folder / "student.onnx"
        _clear(folder)
        calibration, eval_images, eval_labels = load_export_images(
            index.root, calibration_count=cfg.calibration_count, seed=cfg.seed, progress=cfg.progress
        )
        student = load_checkpoint(student_path).model
        result = export_model(
            student,
            folder / "student.tflite",
            quantization=cfg.quantization,
            calibration=calibration,
            eval_images=eval_images,
            eval_labels=eval_labels,
            latency_runs=cfg.latency_runs,
            # the thread count the report's header states, for every backend (LiteRT's default is fewer)
            threads=torch.get_num_threads(),
            progress=cfg.progress,
        )
        _say(cfg, result.report.to_markdown())
        if not result.report.passed:
            # The files exist and every other stage can go on; the report lists the failed checks at the top.
            run.notes.append("verification FAILED: " + "; ".join(result.report.failures))
            _say(cfg, "WARNING: some exported files failed verification; see the report")
        return result.report.to_dict(), sorted(result.tflite.values()), result.onnx

    verification, tflite_files, onnx_file = run.stage("export", export_stage)
    artifacts["onnx"] = onnx_file
    for path in tflite_files:
        artifacts[path.stem] = path

    # 7. report ------------------------------------------------------------------------------------------------
    def report_stage():
        from ladeda_lib.robustness import deployment_table

        exported = _evaluate_exported(index, [onnx_file, *tflite_files], cache, cfg.progress)
        deployed = next((p for p in tflite_files if p.stem.endswith("float32")), None)
        robustness = None
        if deployed is not None:
            _, table = deployment_table(deployed, index, cache_dir=cache, progress=False)
            robustness = (deployed.name, table)
        return write_report(
            out, cfg, index, metrics, exported, verification, artifacts, run.timings, run.notes, robustness
        )

    report = run.stage("report", report_stage)
    total = sum(run.timings.values())
    _say(cfg, f"\npipeline finished in {total:.0f} s; report: {report}")
    all_metrics = {"models": metrics, "verification": verification}
    return PipelineResult(out, report, all_metrics, artifacts, run.timings, run.notes)


def _evaluate_exported(index: Any, files: list[Path], cache: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """Metrics per split/platform of each exported file (``evaluate_model`` runs any format)."""
    from ladeda_lib.evaluation import evaluate_model

    results: dict[str, dict[str, Any]] = {}
    for path in files:
        report = evaluate_model(path, index, cache_dir=cache, progress=False, localisation=False)
        results[path.name] = report["groups"]
        if progress:
            print(f"    scored {path.name}")
    return results


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
    cfg: PipelineConfig,
    index: Any,
    metrics: dict[str, dict[str, Any]],
    exported: dict[str, dict[str, Any]],
    verification: dict[str, Any],
    artifacts: dict[str, Path],
    timings: dict[str, float],
    notes: list[str],
    robustness: tuple[str, str] | None = None,
) -> Path:
    """Write ``report.md``, ``metrics.json`` and the figures under ``out``; return the report path.

    ``robustness`` is (deployed file name, Markdown table of :func:`ladeda_lib.robustness.deployment_table`).
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
    heatmaps = _heatmap_examples(index, artifacts["two_stage"], figures, cfg.heatmap_examples)

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
        *_teacher_warnings(metrics),
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
    lines += ["", "## Sample heatmaps (two-stage student)", ""]
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
    (out / "metrics.json").write_text(json.dumps(_json_safe(payload), indent=2))
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
            curves[name] = (np.asarray(scores["labels"]), 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80))))
    if not curves:
        return None
    fig = plot_reliability(curves, title="Reliability on the test images")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _teacher_warnings(metrics: dict[str, dict[str, Any]]) -> list[str]:
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


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _run_cli(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(
        data=args.data,
        output=args.output,
        force=args.force,
        seed=args.seed,
        device=args.device,
        quantization=args.quantization,
        teacher=args.teacher,
        augment=args.augment,
    )
    try:
        result = run_pipeline(cfg)
    except PipelineError as err:
        print(f"ladeda pipeline: {err}")
        return 1
    print(f"report: {result.report}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="data → teacher → students → evaluation → verified TFLite exports, with a report",
        description="Run the whole LaDeDa → Tiny-LaDeDa path and write OUTPUT/report.md. Finished stages are reused.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset root (WildRF layout, class folder or CSV); default: the toy set",
    )
    p.add_argument("--output", type=Path, default=None, help="output folder (default: runs/pipeline)")
    p.add_argument("--force", action="store_true", help="rebuild every stage instead of reusing artifacts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument(
        "--teacher",
        default="auto",
        choices=("auto", "train"),
        help="auto: the published teacher if present, else the shipped toy teacher on the default toy data, else "
        "train one on the data; train: always train a compact teacher on the data",
    )
    p.add_argument(
        "--quantization",
        default="all",
        choices=("none", "float16", "dynamic_range", "int8", "all"),
        help="which TFLite files to produce (default: all)",
    )
    p.add_argument(
        "--augment",
        nargs="?",
        const="on",
        default="off",
        metavar="SPEC",
        help="train both students with blur/rescale/JPEG augmentation (bare --augment = the platform preset; "
        "see ladeda train-student --help). Finished students are reused: add --force after changing it",
    )
    p.set_defaults(func=_run_cli)
