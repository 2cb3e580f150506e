"""The photo-backed toy world: split by photograph, determinism, layout, masks, held-out photographs, skips."""

from __future__ import annotations

import hashlib
import json
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ladeda_lib.cli import main
from ladeda_lib.data import photos, toy
from ladeda_lib.data.layouts import detect_dataset
from ladeda_lib.data.photos import PhotoWorld, find_bundled, heldout_dir, read_bundled, split_photos
from ladeda_lib.data.shortcut import global_statistics, standardized_mean_differences
from ladeda_lib.data.tensors import load_tensors
from ladeda_lib.data.toy import ToyConfig, make_toy_dataset

SMALL = ToyConfig(train_per_class=2, val_per_class=1, test_per_class=1, partial_fraction=1.0)
#: A few files of every kind: real and fake images of each split, and a mask.
SOME_FILES = (
    "train/0_real/real_0001.jpg",
    "train/1_fake/fake_0001.jpg",
    "val/1_fake/fake_0000.jpg",
    "test/facebook/0_real/real_0000.jpg",
    "masks/train/1_fake/fake_0000.png",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_toy_dataset(
        tmp_path_factory.mktemp("photos") / "world", seed=0, config=SMALL, progress=False, world="photos"
    )


def _digests(root, files=SOME_FILES):
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}


def test_every_photograph_feeds_one_split_only(world):
    record = json.loads((world / "photos.json").read_text())
    split = record["split"]
    names = [name for s in ("train", "val", "test") for name in split[s]]
    assert len(names) == len(set(names))  # no photograph in two splits
    found, _ = find_bundled()
    assert set(names) == {p.name for p in found} == set(record["photos"])
    assert [len(split[s]) for s in ("train", "val", "test")] == [10, 3, 3]  # 16 photographs installed here
    for name, entry in record["photos"].items():
        assert name in split[entry["split"]]
        assert entry["package"] in ("skimage.data", "sklearn.datasets", "matplotlib")
    # every crop comes from a photograph of its own split
    photo_world = PhotoWorld(0, SMALL)
    for s, platforms in (("train", [None]), ("val", [None]), ("test", list(SMALL.platforms))):
        for platform in platforms:
            assert {photo_world.photo_of(s, platform, i) for i in range(20)} <= set(split[s])


def test_split_photos_cuts_small_sets_and_refuses_too_few():
    for n in (3, 4, 7):
        names = [f"p{i}" for i in range(n)]
        split = split_photos(names, seed=0)
        sizes = [len(split[s]) for s in ("train", "val", "test")]
        assert min(sizes) >= 1 and sum(sizes) == n
        assert sorted(sum(split.values(), [])) == sorted(names)
    assert split_photos([f"p{i}" for i in range(16)], seed=0) != split_photos([f"p{i}" for i in range(16)], seed=1)
    with pytest.raises(ValueError, match="at least 3 photographs"):
        split_photos(["a", "b"], seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    again = make_toy_dataset(tmp_path / "again", seed=0, config=SMALL, progress=False, world="photos")
    other = make_toy_dataset(tmp_path / "other", seed=1, config=SMALL, progress=False, world="photos")
    assert _digests(again) == _digests(world)
    mine, theirs = _digests(world), _digests(other)
    assert all(mine[f] != theirs[f] for f in SOME_FILES)
    record = {root: json.loads((root / "photos.json").read_text()) for root in (world, again, other)}
    assert record[again] == record[world] | {"heldout": "again_heldout"}  # only the folder's name differs
    assert record[other]["split"] != record[world]["split"]


def test_layout_is_detected_and_loads_like_the_toy_world(world):
    index = detect_dataset(world, warn=False)
    assert index.layout == "wildrf" and not index.problems
    assert index.platforms == ["facebook", "reddit", "twitter"]
    counts = index.counts()
    assert counts[("train", None)] == (2, 2) and counts[("val", None)] == (1, 1)
    assert all(counts[("test", p)] == (1, 1) for p in SMALL.platforms)
    tensors = load_tensors(index.samples, progress=False, num_workers=1)
    assert tensors.images.shape == (12, 3, 256, 256) and tensors.images.dtype == torch.uint8
    assert tensors.labels.tolist() == [s.label for s in index.samples]


def test_every_spliced_fake_has_its_mask(world):
    samples = detect_dataset(world, warn=False).samples
    fakes = [s for s in samples if s.label == 1]
    assert len(fakes) == 6 and all(s.mask is not None for s in fakes)  # partial_fraction 1.0: all spliced
    assert all(s.mask is None for s in samples if s.label == 0)
    for s in fakes:
        with Image.open(s.mask) as mask, Image.open(s.path) as image:
            assert mask.size == image.size
            assert 0.05 < (np.asarray(mask) > 127).mean() < 0.6


def test_mask_marks_where_the_fake_differs_from_its_photograph():
    photo_world = PhotoWorld(2, SMALL)
    for i in range(3):
        real = photo_world.render("train", None, 0, i)[0].image
        fake = photo_world.render("train", None, 1, i)[0]
        assert fake.mask is not None and np.array_equal(fake.source, real)  # the same crop
        diff = np.abs(fake.image.astype(int) - real.astype(int)).mean(-1)
        far = ~ndimage.binary_dilation(fake.mask, structure=np.ones((3, 3)), iterations=6)
        assert diff[fake.mask].mean() > 0.5 and diff[far].max() == 0


def test_heldout_folder_holds_the_test_photographs_unmodified(world, tmp_path):
    record = json.loads((world / "photos.json").read_text())
    heldout = heldout_dir(world)
    assert heldout == world.parent / f"{world.name}_heldout" and record["heldout"] == heldout.name
    files = sorted(heldout.iterdir())
    assert [f.name for f in files] == [f"{name}.png" for name in sorted(record["split"]["test"])]
    found = {p.name: p for p in find_bundled()[0]}
    for f in files:
        assert np.array_equal(np.asarray(Image.open(f)), read_bundled(found[f.stem]))
    # another seed written to the same place leaves only its own test photographs there
    root = tmp_path / "reused"
    make_toy_dataset(root, seed=0, config=SMALL, progress=False, world="photos")
    make_toy_dataset(root, seed=1, config=SMALL, progress=False, world="photos")
    test_now = json.loads((root / "photos.json").read_text())["split"]["test"]
    assert test_now != record["split"]["test"]
    assert sorted(f.stem for f in heldout_dir(root).iterdir()) == sorted(test_now)


def test_missing_package_photograph_is_skipped_with_a_note(tmp_path, monkeypatch):
    present = tuple(entry for entry in photos.BUNDLED if entry[0] == "skimage.data")[:4]
    absent = (("skimage.data", "no_such_photograph.png"), ("no_such_package_here", "images/x.jpg"))
    monkeypatch.setattr(photos, "BUNDLED", present + absent)
    with pytest.warns(UserWarning, match="is not installed: skipped") as caught:
        root = make_toy_dataset(tmp_path / "w", seed=0, config=SMALL, progress=False, world="photos")
    notes = [
        "skimage.data/no_such_photograph.png is not installed: skipped",
        "no_such_package_here/images/x.jpg is not installed: skipped",
    ]
    assert [str(w.message) for w in caught] == [f"photo world: {note}" for note in notes]
    record = json.loads((root / "photos.json").read_text())
    assert record["skipped"] == notes
    assert sorted(record["photos"]) == sorted(rel.split(".")[0] for _, rel in present)
    assert not detect_dataset(root, warn=False).problems


def _jpeg(image: np.ndarray, quality: int = 92) -> np.ndarray:
    buf = BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB"))


def _phase_spread(image: np.ndarray, period: int = 8) -> float:
    """The spread of the high-pass residual's mean per phase (mod 8): how periodic the fine detail is."""
    gray = image.astype(np.float64).mean(-1)
    residual = gray - ndimage.uniform_filter(gray, 5)
    h, w = (s // period * period for s in residual.shape)
    return float(residual[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2)).std())


def test_fakes_share_the_scene_carry_a_periodic_trace_and_match_global_statistics():
    photo_world = PhotoWorld(0, ToyConfig(partial_fraction=0.0))
    pairs = [tuple(photo_world.render("train", None, label, i)[0].image for label in (0, 1)) for i in range(20)]
    for real, fake in pairs:  # blurred, a crop and its fake are the same picture
        smooth = [ndimage.gaussian_filter(x.astype(float), (3, 3, 0)) for x in (real, fake)]
        assert np.abs(smooth[0] - smooth[1]).mean() < 1.0
    # measured over seeds 0-5: median ratio 2.2-2.9; global |d| at most 0.09-0.14 (noise level)
    assert np.median([_phase_spread(fake) / _phase_spread(real) for real, fake in pairs]) > 1.5
    images = torch.stack([torch.from_numpy(_jpeg(x).copy()).permute(2, 0, 1) for pair in pairs for x in pair])
    d = standardized_mean_differences(global_statistics(images), np.array([0, 1] * len(pairs)))
    assert max(abs(v) for v in d.values()) < 0.2, d


def test_cli_world_flag_and_unknown_world(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["make-toy-data", "--world", "photos", "--output", str(out), "--train-per-class", "1",
            "--val-per-class", "1", "--test-per-class", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((out / "toy_config.json").read_text())["world"] == "photos"
    assert (out / "photos.json").is_file() and any(heldout_dir(out).iterdir())
    assert "photos world" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown world 'paintings'"):
        make_toy_dataset(tmp_path / "x", config=SMALL, progress=False, world="paintings")


def test_trace_ceiling_sets_a_louder_trace_and_is_recorded(tmp_path, capsys):
    from ladeda_lib.data.photos import PhotoConfig

    tiny = ToyConfig(train_per_class=1, val_per_class=1, test_per_class=1, partial_fraction=0.0)
    args = ["make-toy-data", "--world", "photos", "--trace-ceiling", "1.0", "--output", str(tmp_path / "loud"),
            "--train-per-class", "1", "--val-per-class", "1", "--test-per-class", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((tmp_path / "loud" / "photos.json").read_text())["photo_config"]["trace_ceiling"] == 1.0
    quiet = make_toy_dataset(tmp_path / "quiet", config=tiny, progress=False, world="photos")
    loud = make_toy_dataset(
        tmp_path / "loud2", config=tiny, progress=False, world="photos", photo_config=PhotoConfig(trace_ceiling=1.0)
    )
    fake = "train/1_fake/fake_0000.jpg"
    real = "train/0_real/real_0000.jpg"
    assert (quiet / real).read_bytes() == (loud / real).read_bytes()  # the same crop; only the fake changes
    assert (quiet / fake).read_bytes() != (loud / fake).read_bytes()
    with pytest.raises(ValueError, match="world='photos'"):
        make_toy_dataset(tmp_path / "x", config=tiny, progress=False, photo_config=PhotoConfig())
    assert main(["make-toy-data", "--trace-ceiling", "0.5", "--output", str(tmp_path / "y"), "--quiet"]) != 0
    assert "add --world photos" in capsys.readouterr().err


def test_ensure_toy_dataset_regenerates_a_photo_world_as_scenes(tmp_path, monkeypatch):
    root = tmp_path / "toy"
    root.mkdir()
    manifest = {"seed": 0, "config": toy.asdict(ToyConfig()), "generator": toy.GENERATOR_VERSION}
    calls = []
    monkeypatch.setattr(toy, "make_toy_dataset", lambda path, **kw: calls.append(kw))
    (root / "toy_config.json").write_text(json.dumps(manifest | {"world": "photos"}))
    toy.ensure_toy_dataset(root, progress=False)
    assert len(calls) == 1  # a photo world is not the scenes world notebooks expect
    (root / "toy_config.json").write_text(json.dumps(manifest))  # written before worlds existed: scenes
    toy.ensure_toy_dataset(root, progress=False)
    assert len(calls) == 1
