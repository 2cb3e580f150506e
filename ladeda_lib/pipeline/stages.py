"""The stages of ``ladeda pipeline``, run in order, each skipped when its artifact is there.

data → teacher → teacher targets → single-stage student → the same student trained on labels alone (the
baseline distillation has to beat) → two-stage student → the deployed student (the long recipe below) →
evaluation per split and platform → export of the deployed student to every format with verification →
``OUTPUT/report.md`` with figures.

The three students of equal budget (8 epochs) are the lesson: what distillation adds over labels alone. The
**deployed student** is the best model the pipeline can make in its budget: labels only, the platform
augmentation with 4-epoch warm-ups, the checkpoint picked on clean + degraded val, and 60 epochs of four random
64-pixel crops per image — the patch detector is local, so a crop teaches nearly what a whole image does, and an
epoch of crops (a quarter of the pixels) costs less than half a whole-image one (``docs/results.md``). At long budgets labels alone beat distillation on the toy
data (``benchmarks/distill_study.md``), so this student is trained on labels.

The teacher: the published ``weights/WildRF_LaDeDa.pth`` if a user placed it there; else, on the default toy
data, the robust compact teacher the project ships (``toy-teacher-robust``, trained with the platform
augmentation; see :mod:`ladeda_lib.registry`): at 8 epochs the students distilled from it led those distilled from
``toy-teacher`` on validation AP for every seed tried (``docs/results.md``); on any other data, a compact teacher
trained on that data. The report says which, and flags a teacher that is weaker than the
label-only student at the top.

Every stage writes its artifacts under the output folder (default ``runs/pipeline``) and is skipped on
the next run when its artifact is there (``--force`` rebuilds). A failing stage stops the run with a
message naming the stage; the artifacts of earlier stages stay. Each stage calls the same library
functions the notebooks teach, so the report's numbers are the ones a learner reproduces step by step.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
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
    "deployed student",
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
    teacher: str = "auto"  # "auto": published, else the robust toy teacher (toy data only); "train": always train
    teacher_width: int = 16
    teacher_epochs: int = 14
    teacher_crops_per_image: int = 8
    student_epochs: int = 8
    student_batch_size: int = 32
    epochs_s1: int = 2
    epochs_s2: int = 4
    two_stage_batch_size: int = 16
    quantization: str = "all"
    representative_count: int = 100  # training images the int8 file takes its activation ranges from
    latency_runs: int = 30
    heatmap_examples: int = 3
    progress: bool = True
    # Training-time augmentation of the three 8-epoch students (AugmentConfig.parse: "off", "on" or key=value
    # overrides). The deployed student always trains augmented: with the platform preset when this is "off".
    augment: str = "off"
    # The deployed student's recipe (labels only; see the module docstring). 0 epochs = no such stage: the
    # two-stage student is exported instead.
    deployed_epochs: int = 60
    deployed_crop_size: int = 64
    deployed_crops_per_image: int = 4
    deployed_warmup_epochs: int = 4

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


def _train_in_second_process(config: Any, log_path: str, threads: int) -> None:
    """The deployed student's training, run by a spawned process beside stages 3-5; its output goes to ``log_path``."""
    torch.set_num_threads(threads)
    from ladeda_lib.distill import train_student

    with open(log_path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            train_student(config, progress=False)
        except BaseException:
            traceback.print_exc()
            raise SystemExit(1) from None


class _SecondTrainer:
    """One training run in a spawned process (``start``), while this process goes on with one core fewer;
    ``wait`` gives the core back and raises ``RuntimeError`` naming the log if the run failed."""

    def __init__(self, config: Any, log_path: Path) -> None:
        self.config, self.log_path, self.process = config, log_path, None
        self.threads = torch.get_num_threads()

    def start(self) -> None:
        ctx = torch.multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_train_in_second_process, args=(self.config, str(self.log_path), 1))
        self.process.start()
        torch.set_num_threads(max(1, self.threads - 1))

    def wait(self) -> None:
        self.process.join()
        torch.set_num_threads(self.threads)
        if self.process.exitcode != 0:
            raise RuntimeError(f"its training process failed (exit code {self.process.exitcode}); log: {self.log_path}")

    def stop(self) -> None:
        """End the process if it still runs (a stage before ``wait`` failed) and give the core back."""
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()
        torch.set_num_threads(self.threads)


def _run_seconds(folder: Path) -> float:
    """Wall seconds of the epochs a training run logged in ``folder/log.json`` (0 if it logged none)."""
    log = folder / "log.json"
    history = json.loads(log.read_text()).get("history", []) if log.exists() else []
    return float(sum(row.get("time_s") or 0.0 for row in history))


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
        self.on_failure: list[Callable[[], None]] = []  # called when a stage fails or is interrupted

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        number = STAGES.index(name) + 1
        _say(self.cfg, f"\n[{number}/{len(STAGES)}] {name}")
        start = time.perf_counter()
        try:
            value = fn()
        except BaseException as err:  # every failure becomes one clear message; an interrupt stays an interrupt
            for hook in self.on_failure:
                hook()
            if not isinstance(err, Exception):
                raise
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
    from ladeda_lib.data import resolve_dataset
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
        index = resolve_dataset(cfg.data, progress=cfg.progress)
        _say(cfg, index.summary())
        training = load_training_data(index, cache_dir=cache, progress=cfg.progress)
        if training.note:
            run.notes.append(training.note)
        return index, training

    index, training = run.stage("data", data_stage)

    # 2. teacher ---------------------------------------------------------------------------------------
    def teacher_stage():
        from ladeda_lib.distill.teacher import COMPACT_TEACHER, default_teacher_path
        from ladeda_lib.paths import weights_dir
        from ladeda_lib.registry import pipeline_teacher_entry

        found = default_teacher_path(cfg.data) if cfg.teacher == "auto" else None
        # a compact teacher in weights/ may have been trained on other data: the pipeline trains its own instead
        if found is not None and found != weights_dir() / COMPACT_TEACHER:
            shipped = pipeline_teacher_entry(found)
            ckpt = load_checkpoint(found if shipped is None else shipped.path, expected="LaDeDa")
            if shipped is None:
                run.notes.append(f"teacher: the published LaDeDa from {found}")
            else:
                run.notes.append(
                    f"teacher: the compact LaDeDa the project ships for the default toy data, `{shipped.name}` "
                    f"({shipped.path.name}; `{shipped.command}`)"
                )
            return ckpt
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

    # 3. the students: each trained into its own folder, skipped when its final checkpoint is there --------------
    common = {"seed": cfg.seed, "device": cfg.device, "cache_dir": cache, "augment": AugmentConfig.parse(cfg.augment)}

    # 4 (started now). The deployed student trains in a second process while this one trains the three 8-epoch
    # students: its 64-pixel crops gain nothing from a second thread (about 3.5 s an epoch on one or two), so on a
    # 2-core machine the two runs share the cores instead of taking turns. Labels only: it needs no teacher.
    deployed_folder = out / "deployed"
    second = None
    if cfg.deployed_epochs > 0 and _fresh(deployed_folder / "student_final.pt", cfg):
        _clear(deployed_folder)
        deployed_folder.mkdir(parents=True)
        augment = AugmentConfig.parse(cfg.augment)
        dcfg = StudentTrainConfig(
            data=cfg.data,
            output=deployed_folder,
            epochs=cfg.deployed_epochs,
            batch_size=cfg.student_batch_size,
            alpha_distill=0.0,
            alpha_task=1.0,
            pool_warmup_epochs=cfg.deployed_warmup_epochs,
            augment_warmup_epochs=cfg.deployed_warmup_epochs,
            val_views="clean+degraded",
            crop_size=cfg.deployed_crop_size,
            crops_per_image=cfg.deployed_crops_per_image,
            **{**common, "augment": augment if augment.enabled else AugmentConfig.platform()},
        )
        second = _SecondTrainer(dcfg, deployed_folder / "train.log")
        second.start()
        run.on_failure.append(second.stop)
        _say(cfg, f"\n    the deployed student trains in a second process beside stages 3-5 (log: {second.log_path})")

    def trained(
        folder_name: str, train: Callable[[Path], Any], stale: Callable[[Path], bool] = lambda _: False
    ) -> Path:
        """The student's last-epoch checkpoint in ``out/folder_name``, trained first if it is missing or stale."""
        folder = out / folder_name
        final = folder / "student_final.pt"
        if _fresh(final, cfg) or stale(final):
            _clear(folder)
            train(folder)
        return final

    # single-stage (the teacher targets are computed and cached on the way)
    def single_stage(folder: Path) -> None:
        scfg = StudentTrainConfig(
            output=folder, teacher=teacher.path, epochs=cfg.student_epochs, batch_size=cfg.student_batch_size, **common
        )
        train_student(scfg, teacher=teacher, data=training, progress=cfg.progress)

    artifacts["single_stage"] = run.stage("single-stage student", lambda: trained("single_stage", single_stage))

    # the baseline: the same student, same epochs, labels only (no teacher)
    def label_only(folder: Path) -> None:
        scfg = StudentTrainConfig(
            output=folder,
            epochs=cfg.student_epochs,
            batch_size=cfg.student_batch_size,
            alpha_distill=0.0,
            alpha_task=1.0,
            **common,
        )
        train_student(scfg, data=training, progress=cfg.progress)

    artifacts["label_only"] = run.stage("label-only student", lambda: trained("label_only", label_only))

    # two-stage, from the single-stage student (retrained when that one is newer)
    def two_stage(folder: Path) -> None:
        tcfg = TwoStageTrainConfig(
            output=folder,
            teacher=teacher.path,
            init=artifacts["single_stage"],
            epochs_s1=cfg.epochs_s1,
            epochs_s2=cfg.epochs_s2,
            batch_size=cfg.two_stage_batch_size,
            **common,
        )
        train_student_two_stage(tcfg, teacher=teacher, data=training, progress=cfg.progress)

    def older_than_single_stage(final: Path) -> bool:
        return final.stat().st_mtime < artifacts["single_stage"].stat().st_mtime

    artifacts["two_stage"] = run.stage(
        "two-stage student", lambda: trained("two_stage", two_stage, older_than_single_stage)
    )

    # 4. the deployed student: labels only, augmented, long, on crops (the recipe in the module docstring) ----------
    def deployed_stage() -> Path:
        if second is not None:
            second.wait()
        elif not (deployed_folder / "student_final.pt").exists():
            raise FileNotFoundError(f"no deployed student in {deployed_folder}")
        best = deployed_folder / "student_best.pt"
        return best if best.exists() else deployed_folder / "student_final.pt"

    if cfg.deployed_epochs > 0:
        artifacts["deployed"] = run.stage("deployed student", deployed_stage)
        run.notes.append(
            f"deployed student: labels only, augmented, {cfg.deployed_epochs} epochs of "
            f"{cfg.deployed_crops_per_image} random {cfg.deployed_crop_size}-pixel crops per image, the checkpoint "
            f"with the best clean + degraded val AP (epoch {load_checkpoint(artifacts['deployed']).metadata.get('epoch')})"
            + (
                f"; trained in a second process beside stages 3-5, {_run_seconds(deployed_folder):.0f} s"
                if second
                else ""
            )
        )
    else:
        artifacts["deployed"] = artifacts["two_stage"]
        run.notes.append("deployed student: the two-stage student (--deployed-epochs 0)")

    # 5. evaluation ----------------------------------------------------------------------------------------
    def evaluation_stage():
        from ladeda_lib.evaluation import evaluate_model

        models = {
            "teacher": teacher.model,
            "label-only student": load_checkpoint(artifacts["label_only"]).model,
            "single-stage student": load_checkpoint(artifacts["single_stage"]).model,
            "two-stage student": load_checkpoint(artifacts["two_stage"]).model,
        }
        if cfg.deployed_epochs > 0:
            models["deployed student"] = load_checkpoint(artifacts["deployed"]).model
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
        student_path = artifacts["deployed"]
        if not _fresh(summary, cfg) and summary.stat().st_mtime >= student_path.stat().st_mtime:
            run.notes.append(f"exports reused from {folder}")
            stored = json.loads(summary.read_text())
            if not stored.get("passed", True):
                failed = [f["format"] for f in stored.get("formats", []) if not f.get("passed", True)]
                run.notes.append("verification FAILED for " + ", ".join(failed) + " (see the export table)")
            return stored, sorted(folder.glob("student*.tflite")), folder / "student.onnx"
        _clear(folder)
        representative, eval_images, eval_labels = load_export_images(
            index.root, representative_count=cfg.representative_count, seed=cfg.seed, progress=cfg.progress
        )
        student = load_checkpoint(student_path).model
        result = export_model(
            student,
            folder / "student.tflite",
            quantization=cfg.quantization,
            representative_images=representative,
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
        from ladeda_lib.pipeline.report import audit_students, write_report
        from ladeda_lib.robustness import deployment_table

        exported = evaluate_exported(index, [onnx_file, *tflite_files], cache, cfg.progress)
        deployed = next((p for p in tflite_files if p.stem.endswith("float32")), None)
        robustness = None
        if deployed is not None:
            _, table = deployment_table(deployed, index, cache_dir=cache, progress=False)
            robustness = (deployed.name, table)
        names = (("label-only", "label_only"), ("two-stage", "two_stage"), ("deployed", "deployed"))
        students = {k: artifacts[f] for k, f in names if cfg.deployed_epochs > 0 or f != "deployed"}
        audits = audit_students(students, index.root, out / "audit")
        return write_report(
            out, cfg, index, metrics, exported, verification, artifacts, run.timings, run.notes, robustness, audits
        )

    report = run.stage("report", report_stage)
    total = sum(run.timings.values())
    _say(cfg, f"\npipeline finished in {total:.0f} s; report: {report}")
    all_metrics = {"models": metrics, "verification": verification}
    return PipelineResult(out, report, all_metrics, artifacts, run.timings, run.notes)


def evaluate_exported(index: Any, files: list[Path], cache: Path, progress: bool) -> dict[str, dict[str, Any]]:
    """Metrics per split/platform of each exported file (``evaluate_model`` runs any format)."""
    from ladeda_lib.evaluation import evaluate_model

    results: dict[str, dict[str, Any]] = {}
    for path in files:
        report = evaluate_model(path, index, cache_dir=cache, progress=False, localisation=False)
        results[path.name] = report["groups"]
        if progress:
            print(f"    scored {path.name}")
    return results
