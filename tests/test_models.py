"""Teacher and student: parameter counts, shapes, published key layout, preprocessing."""

import pytest
import torch

from ladeda_lib.models import PREPROCESS_CHOICES, LaDeDa, TinyLaDeDa, make_preprocess

TEACHER_STEM_KEYS = {"conv1.weight", "conv2.weight", "bn1.weight", "bn1.running_var", "fc.weight", "fc.bias"}


def test_parameter_counts_match_the_published_models():
    assert LaDeDa(width=64).num_parameters() == 13_641_793
    assert TinyLaDeDa().num_parameters() == 1_297


@pytest.mark.parametrize("size, teacher_grid, student_grid", [(256, 31, 126), (224, 27, 110), (320, 39, 158)])
def test_output_shapes(size, teacher_grid, student_grid):
    x = torch.randn(2, 3, size, size)
    teacher, student = LaDeDa(width=4).eval(), TinyLaDeDa().eval()
    with torch.no_grad():
        assert teacher.patch_logits(x).shape == (2, 1, teacher_grid, teacher_grid)
        assert teacher(x).shape == (2, 1)
        assert student.patch_logits(x).shape == (2, 1, student_grid, student_grid)
        assert student(x).shape == (2, 1)
    assert teacher.grid_size(size) == teacher_grid and student.grid_size(size) == student_grid


def test_published_teacher_keys_and_shapes():
    sd = LaDeDa(width=64).state_dict()
    assert TEACHER_STEM_KEYS <= set(sd)
    assert sd["conv1.weight"].shape == (64, 3, 1, 1)
    assert sd["conv2.weight"].shape == (64, 64, 3, 3)
    # Only the first block of layer1 and layer2 has a 3x3 conv2; all other conv2 are 1x1.
    assert sd["layer1.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["layer1.1.conv2.weight"].shape == (64, 64, 1, 1)
    assert sd["layer3.0.conv2.weight"].shape == (256, 256, 1, 1)
    assert sd["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert sd["fc.weight"].shape == (1, 2048)
    blocks = {k.split(".")[0] + "." + k.split(".")[1] for k in sd if k.startswith("layer")}
    assert len(blocks) == 3 + 4 + 6 + 3


def test_published_student_keys():
    expected = {
        "conv1.weight": (8, 3, 1, 1),
        "conv2.weight": (8, 8, 3, 3),
        "bn1.weight": (8,),
        "layer1.0.conv1.weight": (8, 8, 1, 1),
        "layer1.0.bn1.weight": (8,),
        "layer1.0.conv2.weight": (8, 8, 3, 3),
        "layer1.0.bn2.weight": (8,),
        "fc.weight": (1, 8),
        "fc.bias": (1,),
    }
    sd = TinyLaDeDa().state_dict()
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape
    # fixed preprocessing kernels are not part of the state_dict
    assert not any("kernel" in k or "preprocess" in k for k in sd)


@pytest.mark.parametrize("arch", [lambda: LaDeDa(width=64), lambda: TinyLaDeDa()])
def test_strict_state_dict_round_trip(arch):
    a, b = arch(), arch()
    b.load_state_dict(a.state_dict(), strict=True)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_bn_momentum_of_the_stem():
    assert LaDeDa(width=4).bn1.momentum == 0.001
    assert TinyLaDeDa().bn1.momentum == 0.001


def test_compact_teacher_keeps_the_geometry():
    full, compact = LaDeDa(width=64).geometry(), LaDeDa(width=8).geometry()
    assert (full.receptive_field, full.stride, full.offset) == (compact.receptive_field, compact.stride, compact.offset)
    assert LaDeDa(width=8).num_parameters() < LaDeDa(width=64).num_parameters() / 50


def test_preprocessing_choices():
    x = torch.rand(1, 3, 16, 16)
    for name in PREPROCESS_CHOICES:
        assert make_preprocess(name)(x).shape == x.shape
    assert torch.equal(make_preprocess("raw")(x), x)
    # NPR is zero on an image made of constant 2x2 blocks (what nearest upsampling produces)
    blocky = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), scale_factor=2, mode="nearest")
    assert make_preprocess("NPR")(blocky).abs().max() == 0
    # the diagonal filter is zero on a constant image (away from the zero-padded border)
    assert make_preprocess("right_diag")(torch.ones(1, 3, 8, 8))[..., 1:-1, 1:-1].abs().max() == 0
    with pytest.raises(ValueError, match="unknown preprocess"):
        make_preprocess("sobel")


def test_freeze_stops_gradients_and_sets_eval():
    model = TinyLaDeDa().freeze()
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
