"""The decoded uint8 training cache: shapes, labels, Dataset protocol, the memory-mapped disk cache (round trip,
reuse, invalidation, interrupted builds)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import ladeda_lib.data.tensors as tensors_mod
from ladeda_lib.data.images import ImageLoadError, resize_to_uint8
from ladeda_lib.data.layouts import Sample
from ladeda_lib.data.tensors import cache_key, load_tensors, release_pages


def _samples(tmp_path, n=4):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (30 + i, 50, 3), dtype=np.uint8)).save(p)
        out.append(Sample(p, i % 2))
    return out


def test_load_tensors_shapes_and_content(tmp_path):
    samples = _samples(tmp_path)
    t = load_tensors(samples, progress=False)
    assert t.images.shape == (4, 3, 256, 256) and t.images.dtype == torch.uint8
    assert t.labels.tolist() == [0, 1, 0, 1] and len(t) == 4
    image, label = t[2]
    assert torch.equal(image, resize_to_uint8(samples[2].path)) and int(label) == 0
    sub = t.subset([3, 1])
    assert sub.labels.tolist() == [1, 1] and sub.samples[0] is samples[3]


def test_disk_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    samples = _samples(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = load_tensors(samples, cache_dir=cache, progress=False)
    files = list(cache.glob("tensors_*.u8"))
    assert len(files) == 1 and first.path == files[0]

    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(tensors_mod, "resize_to_uint8", fail)
    again = load_tensors(samples, cache_dir=cache, progress=False)
    assert torch.equal(again.images, first.images)
    monkeypatch.undo()

    key = cache_key(samples)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(samples[0].path)  # content (size) changes
    os.utime(samples[0].path, ns=(1, 1))
    assert cache_key(samples) != key
    changed = load_tensors(samples, cache_dir=cache, progress=False)
    assert changed.images[0].max() == 0 and len(list(cache.glob("tensors_*.u8"))) == 2


def test_unreadable_files_raise_with_count_and_names(tmp_path):
    samples = _samples(tmp_path)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(ImageLoadError, match=r"(?s)1 of 5 images.*bad\.jpg"):
        load_tensors([*samples, Sample(tmp_path / "bad.jpg", 1)], progress=False)
    with pytest.raises(ValueError, match="no samples"):
        load_tensors([], progress=False)


def test_memory_mapped_cache_round_trip(tmp_path):
    samples = _samples(tmp_path / "imgs", n=5)
    in_memory = load_tensors(samples, progress=False)
    mapped = load_tensors(samples, cache_dir=tmp_path / "cache", progress=False, chunk_size=2)
    assert in_memory.path is None and mapped.path.suffix == ".u8"
    assert mapped.path.stat().st_size == 5 * 3 * 256 * 256  # raw uint8, nothing else in the file
    assert torch.equal(mapped.images, in_memory.images) and torch.equal(mapped.labels, in_memory.labels)
    again = load_tensors(samples, cache_dir=tmp_path / "cache", progress=False)
    release_pages()  # dropping resident pages keeps the values: they come back from the file
    assert torch.equal(again.images[1:4], in_memory.images[1:4])
    batch = again.images[torch.tensor([4, 0])]
    assert torch.equal(batch, in_memory.images[[4, 0]])
    assert not list((tmp_path / "cache").glob("*.partial")) and not list((tmp_path / "cache").glob("*.done"))


def test_interrupted_build_resumes_and_never_leaves_a_half_file_in_use(tmp_path, monkeypatch):
    samples = _samples(tmp_path / "imgs", n=7)
    cache = tmp_path / "cache"
    real = tensors_mod.resize_to_uint8
    calls = []

    def interrupted(path, *args, **kwargs):
        if len(calls) == 4:  # two chunks of 2 are done, the third is cut off
            raise KeyboardInterrupt
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tensors_mod, "resize_to_uint8", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_tensors(samples, cache_dir=cache, progress=False, num_workers=1, chunk_size=2)
    assert not list(cache.glob("*.u8")) and not list(cache.glob("*.json"))  # no final file, no metadata
    assert len(list(cache.glob("*.u8.partial"))) == 1

    calls.clear()
    monkeypatch.setattr(tensors_mod, "resize_to_uint8", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    resumed = load_tensors(samples, cache_dir=cache, progress=False, num_workers=1, chunk_size=2)
    assert sorted(calls) == sorted(s.path for s in samples[4:])  # only the unfinished chunks were decoded
    assert torch.equal(resumed.images, load_tensors(samples, progress=False).images)
    assert not list(cache.glob("*.partial")) and not list(cache.glob("*.done"))


def _load_in_child(samples: list[Sample], cache: str, barrier, queue) -> None:
    barrier.wait()  # both jobs ask for the same cache at the same moment
    loaded = load_tensors(samples, cache_dir=cache, progress=False, num_workers=1, chunk_size=2)
    queue.put(int(loaded.images.long().sum()))


def test_two_jobs_building_the_same_cache_both_finish(tmp_path):
    """Two trainings started side by side used to share one ``.partial`` file: the slower one found it renamed and
    failed (FileNotFoundError), or truncated the faster one's finished chunks under it."""
    import multiprocessing

    samples = _samples(tmp_path / "imgs", n=24)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    args = (samples, str(tmp_path / "cache"), barrier, queue)
    jobs = [ctx.Process(target=_load_in_child, args=args) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0]
    expected = int(load_tensors(samples, progress=False).images.long().sum())
    assert [queue.get(timeout=5) for _ in jobs] == [expected, expected]
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.u8"))) == 1 and not list(cache.glob("*.partial")) and not list(cache.glob("*.done"))
