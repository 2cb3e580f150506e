"""Teacher targets: shapes, equality with the teacher's own forward, caching keyed by data and weights."""

import torch

from ladeda_lib.data.images import normalize_uint8
from ladeda_lib.distill.targets import compute_teacher_targets, teacher_hash
from ladeda_lib.models import LaDeDa


def _teacher(seed: int = 0) -> LaDeDa:
    torch.manual_seed(seed)
    return LaDeDa(width=2)


def _images(n: int = 5, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_targets_match_teacher_forward_and_leave_teacher_untouched():
    teacher, images = _teacher(), _images()
    teacher.train()  # even a teacher left in train mode must not move its BN statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    targets = compute_teacher_targets(teacher, images, cache_dir=None, batch_size=2, progress=False)
    assert targets.patches.shape == (5, 1, 7, 7) and targets.pooled.shape == (5, 1)
    teacher.eval()
    with torch.no_grad():
        logit, patches = teacher.forward_with_patches(normalize_uint8(images))
    # batches of 2 vs one batch of 5: equal up to float32 summation order
    torch.testing.assert_close(targets.patches, patches, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(targets.pooled, logit, rtol=1e-4, atol=1e-4)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cache_reused_and_rebuilt_when_data_or_teacher_change(tmp_path):
    teacher, images = _teacher(), _images()
    first = compute_teacher_targets(teacher, images, tmp_path, progress=False)
    assert not first.from_cache and first.path.is_file() and first.path.suffix == ".f32"
    in_memory = compute_teacher_targets(teacher, images, cache_dir=None, progress=False)
    assert torch.equal(first.patches, in_memory.patches) and torch.equal(first.pooled, in_memory.pooled)
    assert not list(tmp_path.glob("*.partial"))
    again = compute_teacher_targets(teacher, images, tmp_path, progress=False)
    assert again.from_cache and again.path == first.path
    assert torch.equal(again.patches, first.patches)

    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    other_data = compute_teacher_targets(teacher, changed, tmp_path, progress=False)
    assert not other_data.from_cache and other_data.path != first.path

    other_teacher = _teacher(seed=1)
    assert teacher_hash(other_teacher) != teacher_hash(teacher)
    retrained = compute_teacher_targets(other_teacher, images, tmp_path, progress=False)
    assert not retrained.from_cache and retrained.path != first.path
    assert not torch.equal(retrained.patches, first.patches)


def _compute_in_child(cache_dir: str, queue) -> None:
    targets = compute_teacher_targets(_teacher(), _images(n=40), cache_dir, progress=False)
    queue.put(targets.patches.sum().item())


def test_two_jobs_computing_the_same_targets_into_one_cache_both_finish(tmp_path):
    """Two runs sharing a cache used to write one ``.partial`` file: the slower one found it renamed and failed."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    jobs = [ctx.Process(target=_compute_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0]
    sums = [queue.get(timeout=5) for _ in jobs]
    assert sums[0] == sums[1]
    assert len(list(tmp_path.glob("*.f32"))) == 1 and not list(tmp_path.glob("*partial*"))
    reread = compute_teacher_targets(_teacher(), _images(n=40), tmp_path, progress=False)
    assert reread.from_cache and reread.patches.sum().item() == sums[0]
