"""The training loop on tiny synthetic data: which tensors each stage changes, resume, NaN guard, determinism."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ladeda_lib.checkpoints import load_checkpoint, save_checkpoint
from ladeda_lib.data.images import normalize_uint8
from ladeda_lib.data.layouts import DatasetIndex
from ladeda_lib.data.tensors import ImageTensors
from ladeda_lib.distill import (
    StudentTrainConfig,
    TeacherTrainConfig,
    TrainingData,
    TrainingDiverged,
    TwoStageTrainConfig,
    train_student,
    train_student_two_stage,
    train_teacher,
)
from ladeda_lib.distill import train as train_module
from ladeda_lib.distill.targets import teacher_hash
from ladeda_lib.distill.train import resolve_two_stage_init
from ladeda_lib.models import LaDeDa, TinyLaDeDa

SIZE = 64  # small images: 30×30 student grid, 7×7 teacher grid


def _tensors(n: int, seed: int) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g), size=SIZE)
    checker = ((torch.arange(SIZE)[:, None] + torch.arange(SIZE)[None, :]) % 2).float()
    images = smooth * 200 + labels[:, None, None, None] * checker * 40 + torch.rand(n, 3, SIZE, SIZE, generator=g) * 10
    return ImageTensors(images.clamp(0, 255).to(torch.uint8), labels, [])


@pytest.fixture
def data(tmp_path) -> TrainingData:
    return TrainingData(DatasetIndex(tmp_path, "folder", []), _tensors(12, 0), _tensors(6, 1))


@pytest.fixture
def teacher() -> LaDeDa:
    torch.manual_seed(0)
    return LaDeDa(width=2)


def _cfg(tmp_path: Path, name: str, **kw) -> StudentTrainConfig:
    kw = {"epochs": 2, "batch_size": 4, **kw}
    return StudentTrainConfig(output=tmp_path / name, cache_dir=tmp_path / "cache", **kw)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_single_stage_writes_files_and_leaves_teacher_untouched(tmp_path, data, teacher):
    before = _state(teacher)
    result = train_student(_cfg(tmp_path, "single"), teacher=teacher, data=data, progress=False)
    assert _changed(before, _state(teacher)) == set()
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    out = tmp_path / "single"
    for name in ("epoch_001.pt", "epoch_002.pt", "student_best.pt", "student_final.pt", "log.json"):
        assert (out / name).is_file(), name
    log = json.loads((out / "log.json").read_text())
    assert log["status"] == "finished" and len(log["history"]) == 2
    for key in ("train_distill", "train_task", "val_distill", "val_task", "val_accuracy", "val_ap", "val_auc"):
        assert key in log["history"][0]
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["epochs_done"] == 2 and "optimizer" in state and "rng" in state
    final = load_checkpoint(result.final_path, expected="TinyLaDeDa").model
    assert _changed(_state(final), _state(result.model)) == set()
    # the student's own BatchNorm momentum is restored after training (published 0.001 for the stem)
    assert result.model.bn1.momentum == 0.001


def test_same_seed_same_weights_other_seed_differs(tmp_path, data, teacher):
    a = train_student(_cfg(tmp_path, "a"), teacher=teacher, data=data, progress=False)
    b = train_student(_cfg(tmp_path, "b"), teacher=teacher, data=data, progress=False)
    c = train_student(_cfg(tmp_path, "c", seed=1), teacher=teacher, data=data, progress=False)
    assert _changed(_state(a.model), _state(b.model)) == set()
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
    assert _changed(_state(a.model), _state(c.model))


def test_resume_continues_where_it_stopped(tmp_path, data, teacher):
    whole = train_student(_cfg(tmp_path, "whole", epochs=3), teacher=teacher, data=data, progress=False)

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    cfg = _cfg(tmp_path, "parts", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg, teacher=teacher, data=data, progress=False, callback=stop_after_first)
    assert not (tmp_path / "parts" / "student_final.pt").exists()
    resumed = train_student(replace(cfg, resume=True), teacher=teacher, data=data, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert _changed(_state(whole.model), _state(resumed.model)) == set()
    assert [r["val_loss"] for r in whole.history] == [r["val_loss"] for r in resumed.history]


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, data, teacher, monkeypatch):
    calls = {"n": 0}
    real_loss = train_module.distillation_loss

    def loss_going_nan(*args, **kwargs):
        calls["n"] += 1
        terms = real_loss(*args, **kwargs)
        if calls["n"] > 3:  # 3 training batches per epoch: the second epoch diverges
            return terms._replace(total=terms.total * float("nan"))
        return terms

    monkeypatch.setattr(train_module, "distillation_loss", loss_going_nan)
    cfg = _cfg(tmp_path, "nan", epochs=3)
    with pytest.raises(TrainingDiverged, match="epoch_001.pt"):
        train_student(cfg, teacher=teacher, data=data, progress=False)
    out = tmp_path / "nan"
    good = load_checkpoint(out / "epoch_001.pt")
    assert all(torch.isfinite(v).all() for v in good.model.state_dict().values() if v.is_floating_point())
    assert not (out / "epoch_002.pt").exists() and not (out / "student_final.pt").exists()
    assert json.loads((out / "log.json").read_text())["status"] == "diverged"
    assert torch.load(out / "resume.pt", weights_only=True)["epochs_done"] == 1


def test_two_stage_changes_exactly_the_unfrozen_tensors(tmp_path, data, teacher):
    torch.manual_seed(3)
    init = TinyLaDeDa()
    start = _state(init)
    cfg = TwoStageTrainConfig(
        output=tmp_path / "two", epochs_s1=1, epochs_s2=0, batch_size=4, cache_dir=tmp_path / "cache"
    )
    stage1 = train_student_two_stage(cfg, teacher=teacher, data=data, init_model=init, progress=False)
    assert _changed(start, _state(init)) == set()  # the starting model passed in is copied, not trained
    assert _changed(start, _state(stage1.model)) == {"fc.weight", "fc.bias"}
    meta = json.loads(stage1.log_path.read_text())["metadata"]
    assert meta["init_path"] is None and meta["init_hash"] == teacher_hash(init)[:16]

    after1 = _state(stage1.model)
    cfg2 = replace(cfg, output=tmp_path / "two2", epochs_s1=0, epochs_s2=1)
    stage2 = train_student_two_stage(cfg2, teacher=teacher, data=data, init_model=stage1.model, progress=False)
    changed = _changed(after1, _state(stage2.model))
    layer1 = {k for k in after1 if k.startswith("layer1.")}
    assert changed == layer1 | {"fc.weight", "fc.bias"}
    assert {"layer1.0.bn1.running_mean", "layer1.0.bn2.running_var", "layer1.0.bn1.num_batches_tracked"} <= changed
    assert not changed & {k for k in after1 if k.split(".")[0] in {"conv1", "conv2", "bn1"}}
    assert [r["stage"] for r in stage1.history] == ["stage1"] and [r["stage"] for r in stage2.history] == ["stage2"]


def test_two_stage_default_init_is_announced(tmp_path, monkeypatch):
    monkeypatch.setenv("LADEDA_HOME", str(tmp_path))
    cfg = TwoStageTrainConfig(output=tmp_path / "two")
    path, message = resolve_two_stage_init(cfg)
    assert path is None and "warm-up" in message
    single = tmp_path / "weights" / "single_stage" / "student_final.pt"
    save_checkpoint(TinyLaDeDa(), single)
    path, message = resolve_two_stage_init(cfg)
    assert path == single and "single-stage student" in message
    path, message = resolve_two_stage_init(replace(cfg, init="x.pt"))
    assert path == Path("x.pt") and "--init" in message


def test_two_stage_warmup_when_no_student(tmp_path, data, teacher, monkeypatch):
    monkeypatch.setenv("LADEDA_HOME", str(tmp_path))
    cfg = TwoStageTrainConfig(
        output=tmp_path / "two", epochs_s1=1, epochs_s2=1, warmup_epochs=1, batch_size=4, cache_dir=tmp_path / "c"
    )
    result = train_student_two_stage(cfg, teacher=teacher, data=data, progress=False)
    warm = tmp_path / "two" / "warmup" / "student_final.pt"
    assert warm.is_file()
    meta = json.loads(result.log_path.read_text())["metadata"]
    assert meta["init_path"] == str(warm)
    assert meta["init_hash"] == teacher_hash(load_checkpoint(warm, expected="TinyLaDeDa").model)[:16]
    assert any("warm-up" in note for note in result.notes)
    assert [r["stage"] for r in result.history] == ["stage1", "stage2"]
    assert (tmp_path / "two" / "stage1_epoch_001.pt").is_file() and (tmp_path / "two" / "stage2_epoch_002.pt").is_file()


def test_train_teacher_saves_a_loadable_compact_teacher(tmp_path, data):
    cfg = TeacherTrainConfig(output=tmp_path / "teacher.pt", width=2, epochs=1, batch_size=4, crop_size=32)
    ckpt = train_teacher(cfg, data=data, progress=False)
    assert ckpt.arch == "LaDeDa" and ckpt.config["width"] == 2
    assert not ckpt.model.training and all(not p.requires_grad for p in ckpt.model.parameters())
    assert (tmp_path / "teacher_run" / "log.json").is_file()
    assert len(ckpt.metadata["history"]) == 1


def _noise(n: int, seed: int) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    return ImageTensors(
        torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.arange(n) % 2, []
    )


def test_train_teacher_keeps_the_best_validation_epoch(tmp_path):
    # labels unrelated to the images: validation AP swings from epoch to epoch, so the best is not the last
    data = TrainingData(DatasetIndex(tmp_path, "folder", []), _noise(12, 0), _noise(8, 1))
    cfg = TeacherTrainConfig(output=tmp_path / "teacher.pt", width=2, epochs=4, batch_size=4, crop_size=32, lr=3e-2)
    best = train_teacher(cfg, data=data, progress=False)
    history = best.metadata["history"]
    top = max(r["val_ap"] for r in history)
    chosen = best.metadata["epoch"]
    assert chosen != len(history)  # the situation the option exists for
    assert history[chosen - 1]["val_ap"] == top and best.metadata["val"]["val_ap"] == top
    run = tmp_path / "teacher_run"
    expected = load_checkpoint(run / f"epoch_{chosen:03d}.pt", expected="LaDeDa").model.state_dict()
    assert _changed(expected, best.model.state_dict()) == set()
    last = train_teacher(replace(cfg, output=tmp_path / "last.pt", keep_best=False), data=data, progress=False)
    # same seed, same run (everything but the timings)
    assert [r["val_ap"] for r in last.metadata["history"]] == [r["val_ap"] for r in history]
    assert last.metadata["epoch"] == 4
    final = load_checkpoint(tmp_path / "last_run" / "epoch_004.pt", expected="LaDeDa").model.state_dict()
    assert _changed(final, last.model.state_dict()) == set()


def test_two_stage_resume_inside_stage_two_matches_uninterrupted(tmp_path, data, teacher):
    torch.manual_seed(4)
    init = TinyLaDeDa()
    cfg = TwoStageTrainConfig(
        output=tmp_path / "whole", epochs_s1=1, epochs_s2=2, batch_size=4, cache_dir=tmp_path / "cache"
    )
    whole = train_student_two_stage(cfg, teacher=teacher, data=data, init_model=init, progress=False)

    def stop_in_stage_two(row):
        if row["stage"] == "stage2":
            raise KeyboardInterrupt

    parts = replace(cfg, output=tmp_path / "parts")
    with pytest.raises(KeyboardInterrupt):
        train_student_two_stage(
            parts, teacher=teacher, data=data, init_model=init, progress=False, callback=stop_in_stage_two
        )
    state = torch.load(tmp_path / "parts" / "resume.pt", weights_only=True)
    assert (state["stage_index"], state["epochs_done"]) == (1, 1) and state["scheduler"] is not None
    resumed = train_student_two_stage(
        replace(parts, resume=True), teacher=teacher, data=data, init_model=init, progress=False
    )
    assert [r["stage"] for r in resumed.history] == ["stage1", "stage2", "stage2"]
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in whole.history]
    assert _changed(_state(whole.model), _state(resumed.model)) == set()


def test_decision_offset_shifts_every_pooled_logit_and_keeps_the_ranking(data):
    from ladeda_lib.distill.offset import fit_decision_offset
    from ladeda_lib.evaluation import binary_metrics
    from ladeda_lib.runner import predict

    torch.manual_seed(5)
    model = TinyLaDeDa()
    with torch.no_grad():
        model.fc.bias.fill_(3.0)  # everything looks fake
    before, _ = predict(model, data.train.images)
    shift = fit_decision_offset(model, data.train.images, data.train.labels)
    after, _ = predict(model, data.train.images)
    torch.testing.assert_close(after, before + shift, rtol=0, atol=1e-4)
    assert binary_metrics(data.train.labels, after)["ap"] == binary_metrics(data.train.labels, before)["ap"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert bce(after, data.train.labels.float()) < bce(before, data.train.labels.float())


def test_decision_offset_on_masked_rows_reads_them_in_chunks_and_fits_them_alone(data, monkeypatch):
    from ladeda_lib.distill import offset as offset_module
    from ladeda_lib.distill.offset import fit_decision_offset

    mask = torch.zeros(len(data.train), dtype=torch.bool)
    mask[::3] = True
    mask[1] = True
    torch.manual_seed(5)
    model = TinyLaDeDa()
    reference = TinyLaDeDa()
    reference.load_state_dict(model.state_dict())
    want = fit_decision_offset(reference, data.train.images[mask], data.train.labels[mask])

    seen: list[int] = []
    original = offset_module.predict

    def counting_predict(m, images, *args, **kwargs):
        seen.append(images.shape[0])
        return original(m, images, *args, **kwargs)

    monkeypatch.setattr(offset_module, "OFFSET_CHUNK", 2)
    monkeypatch.setattr(offset_module, "predict", counting_predict)
    got = fit_decision_offset(model, data.train.images, data.train.labels, mask=mask)
    assert seen and max(seen) <= 2 and sum(seen) == int(mask.sum())  # never all selected rows at once
    assert got == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(model.fc.bias, reference.fc.bias, rtol=0, atol=1e-5)


def test_training_fits_only_the_decision_offset_and_records_it(tmp_path, data, teacher):
    plain = train_student(_cfg(tmp_path, "plain", fit_offset=False), teacher=teacher, data=data, progress=False)
    tuned = train_student(_cfg(tmp_path, "tuned"), teacher=teacher, data=data, progress=False)
    assert "decision_offset" not in json.loads(plain.log_path.read_text())
    log = json.loads(tuned.log_path.read_text())
    shift = log["decision_offset"]["offset"]
    assert _changed(_state(plain.model), _state(tuned.model)) <= {"fc.bias"}
    torch.testing.assert_close(tuned.model.fc.bias, plain.model.fc.bias + shift)
    saved = load_checkpoint(tuned.final_path, expected="TinyLaDeDa")
    assert saved.metadata["decision_offset"] == shift
    torch.testing.assert_close(saved.model.fc.bias, tuned.model.fc.bias)
    assert log["decision_offset"]["val_after"]["ap"] == pytest.approx(log["decision_offset"]["val_before"]["ap"])
    assert any(n.startswith("decision offset fitted") for n in log["notes"])
    # the best checkpoint gets its own offset, fitted to its own weights, in the same run (no rewrite after fit)
    best_plain = load_checkpoint(plain.best_path, expected="TinyLaDeDa")
    best_tuned = load_checkpoint(tuned.best_path, expected="TinyLaDeDa")
    best_shift = best_tuned.metadata["decision_offset"]
    torch.testing.assert_close(best_tuned.model.fc.bias, best_plain.model.fc.bias + best_shift)
    assert "decision_offset" not in best_plain.metadata


def test_labelled_subset_is_stratified_and_deterministic():
    from ladeda_lib.distill.data import labelled_subset

    labels = torch.tensor([0] * 50 + [1] * 30)
    keep = labelled_subset(labels, 0.2, seed=3)
    assert int(keep[:50].sum()) == 10 and int(keep[50:].sum()) == 6
    assert torch.equal(keep, labelled_subset(labels, 0.2, seed=3))
    assert not torch.equal(keep, labelled_subset(labels, 0.2, seed=4))
    assert bool(labelled_subset(labels, 1.0).all())
    with pytest.raises(ValueError, match="label fraction"):
        labelled_subset(labels, 0.0)


def test_labels_only_run_needs_no_teacher(tmp_path, data, monkeypatch):
    def no_teacher(*args, **kwargs):
        raise AssertionError("a labels-only run must not load or train a teacher")

    monkeypatch.setattr(train_module, "get_teacher", no_teacher)
    cfg = _cfg(tmp_path, "labels_only", alpha_distill=0.0, alpha_task=1.0)
    result = train_student(cfg, data=data, progress=False)
    log = json.loads(result.log_path.read_text())
    assert log["metadata"]["teacher"]["labels_only"] is True


def test_label_fraction_limits_the_task_term_and_calibration(tmp_path, data, teacher):
    from ladeda_lib.distill.train import prepare_student_run

    prep = prepare_student_run(_cfg(tmp_path, "few", label_fraction=0.5), teacher=teacher, data=data, progress=False)
    assert int(prep.task.labelled.sum()) == 6  # 3 of the 6 real and 3 of the 6 fake training images
    assert any("label fraction 0.5" in note for note in prep.notes)
    batch = prep.task.fetch(torch.arange(12))
    assert torch.equal(batch["labelled"], prep.task.labelled)
    assert prep.teacher_info["target_scale"] > 0 and prep.teacher_info["target_clip"] == 4.0


def test_label_scarce_teacher_trains_on_the_labelled_share_only(tmp_path, data, monkeypatch):
    from ladeda_lib.distill import teacher as teacher_module
    from ladeda_lib.distill.data import labelled_subset
    from ladeda_lib.distill.train import prepare_student_run

    seen = []
    real_task = teacher_module.TeacherTask

    def recording_task(*args, **kwargs):
        task = real_task(*args, **kwargs)
        seen.append(task)
        return task

    monkeypatch.setattr(teacher_module, "TeacherTask", recording_task)
    cfg = TeacherTrainConfig(
        output=tmp_path / "scarce.pt", width=2, epochs=1, batch_size=4, crop_size=32, label_fraction=0.5, label_seed=7
    )
    scarce = train_teacher(cfg, data=data, progress=False)
    keep = labelled_subset(data.train.labels, 0.5, 7)
    assert torch.equal(seen[0].images, data.train.images[keep]) and sorted(seen[0].labels.tolist()) == [
        0,
        0,
        0,
        1,
        1,
        1,
    ]
    assert scarce.metadata["config"]["label_fraction"] == 0.5 and scarce.metadata["config"]["label_seed"] == 7

    def notes(**kw):
        run = prepare_student_run(_cfg(tmp_path, "s", **kw), teacher=scarce, data=data, progress=False)
        return [n for n in run.notes if "withholds" in n]

    assert notes(label_fraction=0.5, label_seed=7) == []  # the same subset: the teacher saw no withheld label
    assert "another labelled subset" in notes(label_fraction=0.5, seed=3)[0]  # label seed = seed = 3
    full = train_teacher(replace(cfg, output=tmp_path / "full.pt", label_fraction=1.0), data=data, progress=False)
    run = prepare_student_run(_cfg(tmp_path, "f", label_fraction=0.5), teacher=full, data=data, progress=False)
    assert any("trained on every training label" in n for n in run.notes)


def test_teacher_label_note_reads_the_teachers_recorded_labels():
    from ladeda_lib.distill.data import teacher_label_note

    assert teacher_label_note({"label_fraction": 1.0}, 1.0, 0) is None  # every label: nothing withheld
    assert "not recorded" in teacher_label_note(None, 0.2, 0)
    assert "not recorded" in teacher_label_note({"seed": 0}, 0.2, 0)  # a teacher trained before the setting existed
    assert teacher_label_note({"label_fraction": 0.2, "label_seed": None, "seed": 4}, 0.2, 4) is None
    assert "another labelled subset" in teacher_label_note({"label_fraction": 0.2, "label_seed": 1}, 0.2, 0)


def test_warmup_cosine_ramps_up_then_decays_to_zero():
    from ladeda_lib.distill.loop import Stage, warmup_cosine_lr

    stage = Stage("single", epochs=4, lr=1e-2, scheduler="warmup_cosine", warmup_epochs=1.0)
    rates = [warmup_cosine_lr(stage, epoch, 5, step) for epoch in range(4) for step in range(5)]
    assert rates[0] == pytest.approx(1e-2 / 5)  # the first step already moves
    assert rates[:5] == sorted(rates[:5]) and rates[4] == pytest.approx(1e-2)  # linear ramp over one epoch
    assert rates[5:] == sorted(rates[5:], reverse=True)  # then only down
    assert rates[-1] < 0.02 * 1e-2  # close to zero at the end (the last step starts 0.2 epoch before it)


def test_warmup_cosine_sets_the_rate_of_every_step_and_resumes_exactly(tmp_path, data, teacher):
    cfg = _cfg(tmp_path, "whole", epochs=3, schedule="warmup_cosine", lr_warmup_epochs=1.0)
    whole = train_student(cfg, teacher=teacher, data=data, progress=False)
    # history's lr is the last step's rate: 3 batches of 4 images an epoch
    from ladeda_lib.distill.loop import Stage, warmup_cosine_lr

    stage = Stage("single", 3, cfg.lr, scheduler="warmup_cosine", warmup_epochs=1.0)
    assert [r["lr"] for r in whole.history] == pytest.approx([warmup_cosine_lr(stage, e, 3, 2) for e in range(3)])

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    parts = replace(cfg, output=tmp_path / "parts")
    with pytest.raises(KeyboardInterrupt):
        train_student(parts, teacher=teacher, data=data, progress=False, callback=stop_after_first)
    resumed = train_student(replace(parts, resume=True), teacher=teacher, data=data, progress=False)
    assert _changed(_state(whole.model), _state(resumed.model)) == set()


def test_unknown_schedule_and_target_mode_are_refused(tmp_path, data, teacher):
    with pytest.raises(ValueError, match="--schedule 'linear'"):
        train_student(_cfg(tmp_path, "s", schedule="linear"), teacher=teacher, data=data, progress=False)
    with pytest.raises(ValueError, match="--targets 'fresh'"):
        train_student(_cfg(tmp_path, "t", targets="fresh"), teacher=teacher, data=data, progress=False)


def test_target_mode_auto_is_consistent_only_when_augmenting_with_a_teacher():
    from ladeda_lib.data.augment import AugmentConfig

    on = AugmentConfig.platform()
    assert StudentTrainConfig().target_mode() == "cached"
    assert StudentTrainConfig(augment=on).target_mode() == "consistent"
    assert StudentTrainConfig(augment=on, alpha_distill=0.0).target_mode() == "cached"  # no teacher to run
    assert StudentTrainConfig(augment=on, targets="cached").target_mode() == "cached"


def test_consistent_targets_are_the_teachers_map_of_the_degraded_batch(tmp_path, data, teacher):
    """Cached targets are the teacher's map of the clean image; consistent ones, of the image the student sees."""
    from ladeda_lib.data.augment import AugmentConfig
    from ladeda_lib.data.images import normalize_uint8
    from ladeda_lib.distill.train import prepare_student_run

    harsh = AugmentConfig(p_rescale=1.0, rescale_factor=(0.5, 0.5), p_jpeg=1.0, jpeg_quality=(30, 30))
    cached = prepare_student_run(_cfg(tmp_path, "c", augment=harsh, targets="cached"), teacher, data, progress=False)
    live = prepare_student_run(_cfg(tmp_path, "l", augment=harsh), teacher, data, progress=False)
    assert not cached.task.consistent and live.task.consistent and live.teacher_info["targets"] == "consistent"
    plan = live.task.plan(torch.Generator().manual_seed(0), 4)
    batch_live = live.task.fetch(plan[0])
    batch_cached = cached.task.fetch(cached.task.plan(torch.Generator().manual_seed(0), 4)[0])
    assert torch.equal(batch_live["images"], batch_cached["images"])  # the same degraded images
    assert not torch.equal(batch_live["images"], data.train.images[plan[0][0]])  # ... which differ from the clean ones
    clean_maps = cached.task.targets_for(batch_cached)
    assert torch.equal(clean_maps, cached.task.targets[plan[0][0]])
    live_maps = live.task.targets_for(batch_live)
    with torch.no_grad():
        expected = teacher.eval().forward_with_patches(normalize_uint8(batch_live["images"]))[1]
    assert torch.allclose(live_maps, expected, atol=1e-5 * float(expected.abs().max()))
    assert (live_maps - clean_maps).abs().max() > 0.05 * clean_maps.abs().max()
    # the teacher stays frozen and the same scale is used in both modes
    assert not any(p.requires_grad for p in live.task.teacher.parameters())
    assert live.task.scale == cached.task.scale


def test_consistent_run_trains_and_records_its_target_mode(tmp_path, data, teacher):
    from ladeda_lib.data.augment import AugmentConfig

    before = _state(teacher)
    result = train_student(
        _cfg(tmp_path, "c", augment=AugmentConfig.platform()), teacher=teacher, data=data, progress=False
    )
    assert _changed(before, _state(teacher)) == set()
    log = json.loads(result.log_path.read_text())
    assert log["metadata"]["teacher"]["targets"] == "consistent"
    assert all(r["train_distill"] > 0 for r in result.history)


def test_pooling_warmup_pools_every_patch_first_and_k_later(data, teacher):
    cfg = StudentTrainConfig(alpha_distill=0.0, alpha_task=1.0, pool_warmup_epochs=2)
    task = train_module.prepare_student_run(cfg, teacher, data, progress=False).task
    assert task.pool_warmup_epochs == 2
    torch.manual_seed(0)
    student = TinyLaDeDa()
    batch = task.fetch(torch.arange(4))
    labels = batch["labels"].float()
    logit, patches = student.forward_with_patches(normalize_uint8(batch["images"]))
    mean_bce = F.binary_cross_entropy_with_logits(patches.flatten(1).mean(1), labels)
    topk_bce = F.binary_cross_entropy_with_logits(logit.reshape(-1), labels)
    assert not torch.isclose(mean_bce, topk_bce)
    losses = []
    for epoch in range(3):
        task.begin_epoch(epoch)
        losses.append(task.loss(student, batch)["task"])
    assert torch.isclose(losses[0], mean_bce)  # epoch 1: the mean of all patches
    assert torch.isclose(losses[2], topk_bce)  # from epoch 3 on: the model's own top-K
    plain = train_module.prepare_student_run(StudentTrainConfig(alpha_distill=0.0, alpha_task=1.0), teacher, data)
    task.begin_epoch(0)
    assert task.validate(student)["loss"] == pytest.approx(plain.task.validate(student)["loss"])  # always K


def test_pooling_warmup_run_records_its_setting(tmp_path, data, teacher, monkeypatch):
    from ladeda_lib.data.augment import AugmentConfig, AugmentedTask

    seen = []  # (epoch, augmentation config of that epoch's plan) as the loop sets them
    original = AugmentedTask.plan
    monkeypatch.setattr(
        AugmentedTask, "plan", lambda self, g, b: seen.append((self.epoch, self.current())) or original(self, g, b)
    )
    cfg = _cfg(tmp_path, "pw", pool_warmup_epochs=1, augment=AugmentConfig.platform(), augment_warmup_epochs=1)
    result = train_student(cfg, teacher=teacher, data=data, progress=False)
    assert [epoch for epoch, _ in seen] == [0, 1] and not seen[0][1].enabled and seen[1][1] == AugmentConfig.platform()
    log = json.loads(result.log_path.read_text())
    assert log["metadata"]["config"]["pool_warmup_epochs"] == 1
    assert load_checkpoint(result.final_path).model.pool.spec == 0.1  # the saved model keeps K


def test_a_finished_constant_rate_run_continued_with_resume_is_the_longer_run(tmp_path, data):
    """What ``benchmarks/distill_study.py --continue-from`` rests on: under the constant schedule, with warm-ups of the
    same length, a finished run extended to more epochs by --resume ends with the weights and history of the run that
    had the longer budget from the start (augmentation, pooling warm-up and degraded validation included)."""
    import shutil

    from ladeda_lib.data.augment import AugmentConfig

    recipe = {
        "alpha_distill": 0.0,
        "alpha_task": 1.0,
        "augment": AugmentConfig.platform(),
        "pool_warmup_epochs": 1,
        "augment_warmup_epochs": 1,
        "val_views": "clean+degraded",
    }
    longer = train_student(_cfg(tmp_path, "four", epochs=4, **recipe), data=data, progress=False)
    train_student(_cfg(tmp_path, "two", epochs=2, **recipe), data=data, progress=False)
    shutil.copytree(tmp_path / "two", tmp_path / "continued")
    continued = train_student(_cfg(tmp_path, "continued", epochs=4, resume=True, **recipe), data=data, progress=False)
    assert [r["epoch"] for r in continued.history] == [1, 2, 3, 4]
    assert _changed(_state(longer.model), _state(continued.model)) == set()
    assert [r["val_ap"] for r in longer.history] == [r["val_ap"] for r in continued.history]
    assert (longer.best or {}).get("epoch") == (continued.best or {}).get("epoch")


def test_crop_training_plans_grid_aligned_crops_of_every_image(tmp_path, data, teacher):
    """--crop-size: every image `crops_per_image` times an epoch, corners on the teacher's 8-pixel grid."""
    cfg = _cfg(tmp_path, "crop", targets="cached", crop_size=32, crops_per_image=3)
    task = train_module.prepare_student_run(cfg, teacher, data, progress=False).task
    plan = task.plan(torch.Generator().manual_seed(0), 4)
    idx = torch.cat([spec[0] for spec in plan])
    assert torch.equal(idx.bincount(minlength=12), torch.full((12,), 3))
    corners = torch.cat([torch.cat([spec[1], spec[2]]) for spec in plan])
    assert bool((corners % 8 == 0).all()) and int(corners.max()) <= SIZE - 32 and len(set(corners.tolist())) > 1
    batch = task.fetch(plan[0])
    assert batch["images"].shape == (4, 3, 32, 32)
    i, top, left = int(plan[0][0][0]), int(plan[0][1][0]), int(plan[0][2][0])
    assert torch.equal(batch["images"][0], data.train.images[i, :, top : top + 32, left : left + 32])


def test_crop_targets_are_the_window_of_the_whole_images_map(tmp_path, data, teacher):
    """Cached targets of a crop are the whole image's teacher map over the crop: inside the crop's border ring
    they equal the teacher's map of the crop itself, and the student rows aligned with them are those of the
    whole image, shifted by the crop's corner."""
    cfg = _cfg(tmp_path, "crop", targets="cached", crop_size=32)
    task = train_module.prepare_student_run(cfg, teacher, data, progress=False).task
    spec = (torch.tensor([1, 2]), torch.tensor([8, 16]), torch.tensor([24, 0]))
    batch = task.fetch(spec)
    with torch.no_grad():
        own = teacher.eval().forward_with_patches(normalize_uint8(batch["images"]))[1]
    assert batch["teacher"].shape == own.shape == (2, 1, 3, 3)
    inner = (slice(None), slice(None), slice(0, 2), slice(0, 2))  # the last row/column reach the crop's edge
    assert torch.allclose(batch["teacher"][inner], own[inner], atol=1e-5 * float(own.abs().max()))
    assert torch.equal(batch["teacher"][0], task.targets[1, :, 1:4, 3:6])
    # student row 4 I + 1 of the whole image is row 4 (I - corner / 8) + 1 of the crop
    assert task.crop_indices.tolist() == [1, 5, 9]
    student = TinyLaDeDa().eval()
    with torch.no_grad():
        whole = student.forward_with_patches(normalize_uint8(data.train.images[1:2]))[1]
        crop = student.forward_with_patches(normalize_uint8(batch["images"][:1]))[1]
    assert torch.allclose(crop[0, 0, 5, 9], whole[0, 0, 5 + 4, 9 + 12], atol=1e-5)  # corner (8, 24) = (4, 12) rows


def test_crop_training_trains_on_crops_and_validates_on_whole_images(tmp_path, data, teacher, monkeypatch):
    from ladeda_lib.data.augment import AugmentConfig

    shapes = []
    original = train_module.StudentTask.loss
    monkeypatch.setattr(
        train_module.StudentTask,
        "loss",
        lambda self, m, b: shapes.append(tuple(b["images"].shape)) or original(self, m, b),
    )
    aug = AugmentConfig.platform()
    for name, kw in {"labels": {"alpha_distill": 0.0, "alpha_task": 1.0}, "consistent": {}}.items():
        shapes.clear()
        cfg = _cfg(tmp_path, name, augment=aug, val_views="clean+degraded", crop_size=32, crops_per_image=2, **kw)
        result = train_student(cfg, teacher=teacher, data=data, progress=False)
        assert {s[1:] for s in shapes} == {(3, 32, 32)} and sum(s[0] for s in shapes) == 2 * 2 * 12
        assert result.history[-1]["val_ap_degraded"] is not None  # validated on the whole (degraded) val images
        saved = load_checkpoint(result.final_path)
        assert saved.metadata["config"]["crop_size"] == 32 and saved.metadata["config"]["crops_per_image"] == 2
        assert saved.model(normalize_uint8(data.val.images)).shape == (6, 1)


def test_crop_size_off_the_grid_or_too_large_is_refused(tmp_path, data, teacher):
    for bad in (12, 20):
        with pytest.raises(ValueError, match="multiple of 8"):
            StudentTrainConfig(crop_size=bad)
    with pytest.raises(ValueError, match="crops-per-image"):
        StudentTrainConfig(crop_size=32, crops_per_image=0)
    with pytest.raises(ValueError, match="crop_size must be a multiple of 8 in"):
        train_module.prepare_student_run(_cfg(tmp_path, "big", crop_size=SIZE + 8), teacher, data, progress=False)
