"""Alignment of the student grid on the teacher grid, and the distillation loss on hand-computed cases."""

import math

import pytest
import torch

from ladeda_lib.distill.loss import default_alignment, distillation_loss, infer_input_size
from ladeda_lib.geometry import align_student_to_teacher
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def test_alignment_indices_are_4i_plus_1_and_centred():
    idx = default_alignment(256)
    assert idx.tolist() == [4 * i + 1 for i in range(31)]
    student, teacher = TinyLaDeDa().geometry(), LaDeDa(width=1).geometry()
    for big, small in enumerate(idx.tolist()):
        assert student.centre(small) == teacher.centre(big)
        s_top, s_bottom = student.span(small)
        t_top, t_bottom = teacher.span(big)
        assert t_top <= s_top and s_bottom <= t_bottom  # the student patch lies inside the teacher patch


def test_infer_input_size_from_grids():
    assert infer_input_size(126, 31) == 256
    assert infer_input_size(TinyLaDeDa().grid_size(64), LaDeDa(width=1).grid_size(64)) == 64
    with pytest.raises(ValueError, match="same input size"):
        infer_input_size(126, 5)


def test_loss_hand_computed():
    student = torch.randn(2, 1, 126, 126) * 100  # non-aligned positions must not matter
    idx = default_alignment(256)
    aligned = torch.zeros(2, 1, 31, 31)
    aligned[0, 0, 3, 4] = 1.0
    student[:, :, idx[:, None], idx[None, :]] = aligned
    teacher = torch.zeros(2, 1, 31, 31)
    teacher[1, 0, 0, 0] = 2.0
    logits = torch.tensor([[0.0], [2.0]])
    labels = torch.tensor([1, 0])
    loss = distillation_loss(student, logits, teacher, labels)
    mse = (1.0 + 4.0) / (2 * 31 * 31)
    bce = (math.log(2.0) + math.log(1.0 + math.exp(2.0))) / 2
    assert loss.distill.item() == pytest.approx(mse, rel=1e-6)
    assert loss.task.item() == pytest.approx(bce, rel=1e-6)
    assert loss.total.item() == pytest.approx(0.5 * mse + 0.5 * bce, rel=1e-6)
    weighted = distillation_loss(student, logits, teacher, labels, alpha_distill=2.0, alpha_task=0.0)
    assert weighted.total.item() == pytest.approx(2.0 * mse, rel=1e-6)


def test_distill_gradient_reaches_only_aligned_positions():
    student = torch.zeros(1, 1, 126, 126, requires_grad=True)
    loss = distillation_loss(
        student, torch.zeros(1, 1), torch.ones(1, 1, 31, 31), torch.ones(1), alpha_distill=1.0, alpha_task=0.0
    )
    loss.total.backward()
    nonzero = student.grad[0, 0].nonzero()
    expected = set((4 * i + 1, 4 * j + 1) for i in range(31) for j in range(31))
    assert {tuple(x) for x in nonzero.tolist()} == expected
    assert torch.equal(
        align_student_to_teacher(student.grad, default_alignment(256)), torch.full((1, 1, 31, 31), -2.0 / 961)
    )


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="patch maps"):
        distillation_loss(torch.zeros(2, 126, 126), torch.zeros(2, 1), torch.zeros(2, 1, 31, 31), torch.ones(2))


def test_scaled_and_clipped_targets_hand_computed():
    from ladeda_lib.distill.loss import scale_targets, target_scale

    teacher = torch.zeros(1, 1, 31, 31)
    teacher[0, 0, 0, 0], teacher[0, 0, 0, 1] = 30.0, -300.0
    assert scale_targets(teacher, 10.0, clip=4.0)[0, 0, 0, :3].tolist() == [3.0, -4.0, 0.0]
    assert target_scale(torch.tensor([[3.0, 4.0]])) == pytest.approx(math.sqrt(12.5))
    student = torch.zeros(1, 1, 31, 31)  # already on the teacher grid
    loss = distillation_loss(
        student, torch.zeros(1, 1), teacher, torch.ones(1), alpha_distill=1.0, alpha_task=0.0, scale=10.0, clip=4.0
    )
    # raw MSE would be (900 + 90000) / 961 = 94.6; scaled and clipped it is (9 + 16) / 961
    assert loss.distill.item() == pytest.approx(25.0 / 961, rel=1e-6)
    with pytest.raises(ValueError, match="positive"):
        scale_targets(teacher, 0.0)


def test_task_term_uses_only_labelled_images():
    student = torch.zeros(3, 1, 31, 31)
    teacher = torch.zeros(3, 1, 31, 31)
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1, 0, 0])
    labelled = torch.tensor([False, True, True])
    loss = distillation_loss(student, logits, teacher, labels, labelled=labelled)
    expected = (math.log(1.0 + math.exp(2.0)) + math.log(1.0 + math.exp(-1.0))) / 2
    assert loss.task.item() == pytest.approx(expected, rel=1e-6)
    none = distillation_loss(student, logits, teacher, labels, labelled=torch.zeros(3, dtype=torch.bool))
    assert none.task.item() == 0.0
