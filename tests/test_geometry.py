"""Receptive field, stride and offset: derived from layers, checked against gradient probes."""

import pytest
import torch

from ladeda_lib.geometry import (
    INPUT_GEOMETRY,
    align_indices,
    align_student_to_teacher,
    load_input_geometry,
    upsample_patch_map,
)
from ladeda_lib.models import LaDeDa, TinyLaDeDa


def probe_support(model, i, j, size=64, trials=3):
    """Input pixels that influence patch logit (i, j), found with gradients (union over random inputs)."""
    model.eval()
    support = torch.zeros(size, size, dtype=torch.bool)
    for seed in range(trials):
        torch.manual_seed(seed)
        x = torch.randn(1, 3, size, size, requires_grad=True)
        model.patch_logits(x)[0, 0, i, j].backward()
        support |= x.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def test_geometry_values():
    t, s = LaDeDa(width=4).geometry(), TinyLaDeDa().geometry()
    assert (t.receptive_field, t.stride, t.offset) == (9, 8, 0)
    assert (s.receptive_field, s.stride, s.offset) == (7, 2, -1)
    assert TinyLaDeDa(preprocess="raw").geometry().receptive_field == 5


@pytest.mark.parametrize(
    "make, cell",
    [
        (lambda: LaDeDa(width=4), (2, 3)),
        (lambda: LaDeDa(width=4, preprocess="raw"), (1, 4)),
        (lambda: TinyLaDeDa(), (5, 9)),
        (lambda: TinyLaDeDa(preprocess="raw"), (4, 2)),
        (lambda: TinyLaDeDa(preprocess="NPR"), (6, 7)),
    ],
)
def test_receptive_field_matches_a_gradient_probe(make, cell):
    torch.manual_seed(0)
    model = make()
    g = model.geometry()
    top, left, bottom, right = g.patch_box(*cell)
    assert probe_support(model, *cell) == (max(top, 0), bottom, max(left, 0), right)


def test_student_border_patch_reaches_into_padding():
    model = TinyLaDeDa()
    assert model.geometry().patch_box(0, 0) == (-1, -1, 6, 6)
    assert probe_support(model, 0, 0) == (0, 6, 0, 6)


def test_alignment_indices_centre_the_student_on_the_teacher():
    t, s = LaDeDa(width=4).geometry(), TinyLaDeDa().geometry()
    idx = align_indices(s, t, 256)
    assert idx.tolist() == [4 * i + 1 for i in range(31)]
    for i in (0, 17, 30):
        assert s.centre(int(idx[i])) == t.centre(i)
        s_lo, s_hi = s.span(int(idx[i]))
        t_lo, t_hi = t.span(i)
        assert t_lo <= s_lo and s_hi <= t_hi  # the student patch lies inside the teacher patch
    x = torch.randn(2, 1, 126, 126)
    aligned = align_student_to_teacher(x, idx)
    assert aligned.shape == (2, 1, 31, 31)
    assert aligned[1, 0, 3, 5] == x[1, 0, 13, 21]


def test_input_geometry_from_config(tmp_path):
    assert INPUT_GEOMETRY.image_size == 256 and INPUT_GEOMETRY.interpolation == "bicubic"
    assert INPUT_GEOMETRY.shape == (3, 256, 256)
    x = torch.rand(3, 4, 4)
    assert torch.allclose(INPUT_GEOMETRY.denormalize(INPUT_GEOMETRY.normalize(x)), x, atol=1e-6)
    bad = tmp_path / "g.json"
    bad.write_text('{"image_size": 256, "crop": 224}')
    with pytest.raises(ValueError, match="crop"):
        load_input_geometry(bad)


def test_upsample_patch_map_places_patches_by_geometry():
    t = LaDeDa(width=4).geometry()
    grid = torch.zeros(31, 31)
    grid[10, 20] = 1.0
    pixels = upsample_patch_map(grid, t, 256)
    assert pixels.shape == (256, 256)
    ys, xs = torch.nonzero(pixels > 0, as_tuple=True)
    top, left, bottom, right = t.patch_box(10, 20)
    assert ys.min() == top and ys.max() == bottom - 1 and xs.min() == left and xs.max() == right - 1
    s = TinyLaDeDa().geometry()
    assert upsample_patch_map(torch.ones(126, 126), s, 256, out_hw=(300, 400)).shape == (300, 400)
    assert torch.allclose(upsample_patch_map(torch.full((126, 126), 2.0), s, 256), torch.tensor(2.0))
