"""The one scoring loop: a PatchDetector runs as it is (channels-last, capped CPU batches, the caller's model left
alone); a Predictor of any format gets the uint8 pixels."""

import numpy as np
import torch

from ladeda_lib.models import TinyLaDeDa


def test_predict_matches_the_plain_forward_and_leaves_the_model_alone():
    from ladeda_lib.data.images import normalize_uint8
    from ladeda_lib.models import LaDeDa
    from ladeda_lib.runner import CPU_BATCH_LIMIT, predict

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (CPU_BATCH_LIMIT + 3, 3, 64, 64), dtype=torch.uint8, generator=g)
    for model in (TinyLaDeDa(), LaDeDa(width=2)):
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        logits, patches = predict(model, images, batch_size=32, keep_patches=True)
        assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert model.conv1.weight.is_contiguous()  # the caller's layout is unchanged
        with torch.no_grad():
            ref_logit, ref_patches = model.eval().forward_with_patches(normalize_uint8(images))
        torch.testing.assert_close(logits, ref_logit.reshape(-1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(patches, ref_patches, rtol=1e-4, atol=1e-4)
        assert patches.is_contiguous()


def test_predict_caps_cpu_batches(monkeypatch):
    from ladeda_lib import runner

    seen = []
    original = TinyLaDeDa.forward_with_patches

    def spy(self, x):
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(TinyLaDeDa, "forward_with_patches", spy)
    images = torch.zeros(runner.CPU_BATCH_LIMIT * 2 + 1, 3, 32, 32, dtype=torch.uint8)
    runner.predict(TinyLaDeDa(), images, batch_size=32)
    assert seen == [runner.CPU_BATCH_LIMIT, runner.CPU_BATCH_LIMIT, 1]
    seen.clear()
    runner.predict(TinyLaDeDa(), images, batch_size=4)
    assert seen == [4, 4, 4, 4, 1]


def test_predict_runs_a_predictor_of_any_format_on_uint8_pixels(student_onnx):
    from ladeda_lib.predictors import load_predictor
    from ladeda_lib.runner import predict

    model, path = student_onnx
    images = torch.randint(0, 256, (5, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    want, want_patches = predict(model, images, keep_patches=True)
    got, got_patches = predict(load_predictor(path, threads=1), images, batch_size=2, keep_patches=True)
    assert got.shape == (5,) and got_patches.shape == (5, 1, 126, 126)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert predict(load_predictor(path), images, keep_patches=False)[1] is None
