"""Find the images and labels behind one path: WildRF tree, a single class folder, or a CSV.

Accepted structures (``detect_dataset`` tries them in this order)::

    WildRF layout                    single folder                 CSV file
    ROOT/                            ROOT/                         labels.csv   path,label[,split][,platform]
    ├── train/                       ├── 0_real/   (or real/)      img/a.jpg,0,train
    │   ├── 0_real/                  │   └── *.jpg|png|webp|bmp    img/b.png,fake,val
    │   └── 1_fake/                  └── 1_fake/   (or fake/)      ...
    ├── val/                             └── ...                   (paths relative to the CSV;
    │   ├── 0_real/                                                 label 0/1 or real/fake;
    │   └── 1_fake/                                                 split train/val/test,
    ├── test/                                                       default train)
    │   ├── reddit/{0_real,1_fake}/
    │   ├── twitter/{0_real,1_fake}/
    │   └── facebook/{0_real,1_fake}/
    └── masks/  (optional: same tree, PNG masks of spliced fakes, white = generated)

A single folder has no splits: every sample gets split ``"train"``; :func:`holdout_split` carves a
deterministic validation part out of it (by a hash of each file's relative path, so adding files does
not reshuffle the others). Problems — empty class folders, files with unknown extensions, CSV rows
naming missing files, unreadable files (with ``verify=True``) — are collected in
:class:`DatasetProblems` and reported, never silently dropped. Introduced in notebook 02.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ladeda_lib.data.images import IMAGE_EXTENSIONS

#: Class folder names and their labels (0 real, 1 fake).
CLASS_DIRS = {"0_real": 0, "real": 0, "1_fake": 1, "fake": 1}
#: Split folder names of the WildRF layout.
SPLITS = ("train", "val", "test")
#: Folder holding ground-truth masks of spliced fakes, mirroring the image tree.
MASK_DIR = "masks"
_LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1}
_SHOW = 5  # how many names an error or report lists

ACCEPTED_STRUCTURES = """Accepted structures:

  (a) WildRF layout                (b) single folder              (c) CSV file
  ROOT/                            ROOT/                          labels.csv  with header path,label[,split]
  ├── train/                       ├── 0_real/  (or real/)          img/a.jpg,0,train
  │   ├── 0_real/                  │   └── *.jpg *.png ...          img/b.png,fake,val
  │   └── 1_fake/                  └── 1_fake/  (or fake/)        paths relative to the CSV,
  ├── val/{0_real,1_fake}/             └── ...                    label 0/1 or real/fake,
  └── test/                                                       split train/val/test (default train)
      ├── reddit/{0_real,1_fake}/
      ├── twitter/{0_real,1_fake}/
      └── facebook/{0_real,1_fake}/
  image extensions: """ + " ".join(IMAGE_EXTENSIONS)


class DatasetLayoutError(ValueError):
    """The path is not a dataset this project understands; the message shows what was found and the accepted trees."""


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``label`` 0 real / 1 fake; ``split`` train/val/test; ``platform`` e.g. "twitter"
    for WildRF test sets (None elsewhere); ``mask`` the ground-truth PNG of a spliced fake (white = generated)."""

    path: Path
    label: int
    split: str = "train"
    platform: str | None = None
    mask: Path | None = None


@dataclass
class DatasetProblems:
    """Everything that was found but not used (or not usable), with the first names of each kind."""

    empty_classes: list[str] = field(default_factory=list)
    unknown_files: list[Path] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    unreadable_files: list[Path] = field(default_factory=list)
    ignored_entries: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (self.empty_classes, self.unknown_files, self.missing_files, self.unreadable_files, self.ignored_entries)
        )

    def report(self) -> str:
        """Human-readable report: one line per kind with the count and the first names ("" if none)."""
        lines = []
        kinds = (
            ("empty class folders", self.empty_classes),
            ("files with unknown extensions (skipped)", self.unknown_files),
            ("CSV rows naming missing files (skipped)", self.missing_files),
            ("unreadable image files (skipped)", self.unreadable_files),
            ("unrecognised entries (ignored)", self.ignored_entries),
        )
        for what, items in kinds:
            if items:
                names = ", ".join(str(x) for x in items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
                lines.append(f"{len(items)} {what}: {names}")
        return "\n".join(lines)


@dataclass
class DatasetIndex:
    """The samples found under one path and how they were found.

    ``layout`` is "wildrf", "folder" or "csv"; ``samples`` are sorted by split, platform, path.
    """

    root: Path
    layout: str
    samples: list[Sample]
    problems: DatasetProblems = field(default_factory=DatasetProblems)

    def select(self, split: str | None = None, platform: str | None = None) -> list[Sample]:
        """Samples of one split and/or one platform (None = any)."""
        return [
            s
            for s in self.samples
            if (split is None or s.split == split) and (platform is None or s.platform == platform)
        ]

    @property
    def splits(self) -> list[str]:
        """Splits present, in train/val/test order."""
        present = {s.split for s in self.samples}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    @property
    def platforms(self) -> list[str]:
        """Platforms present (WildRF test folders, or a CSV ``platform`` column), sorted."""
        return sorted({s.platform for s in self.samples if s.platform is not None})

    def counts(self) -> dict[tuple[str, str | None], tuple[int, int]]:
        """(split, platform) → (number real, number fake)."""
        c: Counter = Counter((s.split, s.platform, s.label) for s in self.samples)
        keys = sorted({(s, p) for s, p, _ in c}, key=lambda k: (_split_rank(k[0]), k[1] or ""))
        return {k: (c[(k[0], k[1], 0)], c[(k[0], k[1], 1)]) for k in keys}

    def summary(self) -> str:
        """Table of what was detected: layout, per split/platform counts of real and fake, masks, problems."""
        lines = [f"dataset: {self.root}", f"layout:  {self.layout}", ""]
        lines.append(f"{'split':<8} {'platform':<10} {'real':>6} {'fake':>6} {'total':>6}")
        total_r = total_f = 0
        for (split, platform), (r, f) in self.counts().items():
            lines.append(f"{split:<8} {platform or '-':<10} {r:>6} {f:>6} {r + f:>6}")
            total_r, total_f = total_r + r, total_f + f
        lines.append(f"{'all':<8} {'':<10} {total_r:>6} {total_f:>6} {total_r + total_f:>6}")
        n_masks = sum(s.mask is not None for s in self.samples)
        if n_masks:
            lines.append(f"\n{n_masks} fakes have ground-truth masks (spliced regions)")
        if self.layout == "folder":
            lines.append(
                "\nno splits in this layout: all samples are 'train' (see holdout_split for a validation part)"
            )
        if self.problems:
            lines.append("\nproblems:\n" + self.problems.report())
        return "\n".join(lines)


def _split_rank(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _class_dirs(folder: Path) -> dict[int, Path]:
    """label → class folder inside ``folder`` (0_real/real, 1_fake/fake); errors if both spellings exist."""
    found: dict[int, Path] = {}
    for name, label in CLASS_DIRS.items():
        d = folder / name
        if d.is_dir():
            if label in found:
                raise DatasetLayoutError(
                    f"{folder}: both {found[label].name}/ and {name}/ exist for label {label}; keep one of them"
                )
            found[label] = d
    return found


def _mask_for(root: Path, image: Path) -> Path | None:
    rel = image.relative_to(root)
    candidate = root / MASK_DIR / rel.with_suffix(".png")
    return candidate if candidate.is_file() else None


def _scan_classes(
    root: Path, folder: Path, split: str, platform: str | None, problems: DatasetProblems
) -> list[Sample]:
    """Samples of the class folders inside ``folder``; records empty classes and unknown files."""
    classes = _class_dirs(folder)
    samples = []
    for label in (0, 1):
        if label not in classes:
            problems.empty_classes.append(f"{folder}/{'1_fake' if label else '0_real'} (missing)")
            continue
        n = 0
        for p in sorted(classes[label].rglob("*")):
            if not p.is_file() or not _visible(p):
                continue
            if not _is_image(p):
                problems.unknown_files.append(p)
                continue
            samples.append(Sample(p, label, split, platform, _mask_for(root, p)))
            n += 1
        if n == 0:
            problems.empty_classes.append(str(classes[label]))
    for entry in sorted(folder.iterdir()):  # stray images or folders next to the class folders
        if entry.name in CLASS_DIRS or entry.name == MASK_DIR or not _visible(entry):
            continue
        if entry.is_dir() or _is_image(entry):
            problems.ignored_entries.append(entry)
    return samples


def _describe_contents(path: Path) -> str:
    entries = sorted(e for e in path.iterdir() if _visible(e))
    if not entries:
        return "  (empty folder)"
    shown = [f"  {e.name}{'/' if e.is_dir() else ''}" for e in entries[:12]]
    if len(entries) > 12:
        shown.append(f"  ... and {len(entries) - 12} more")
    return "\n".join(shown)


def _hint(path: Path) -> str:
    """Suggest a sub-folder that itself looks like a dataset (e.g. ``data/`` holding ``WildRF/``)."""
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if any((sub / s).is_dir() for s in SPLITS) or _class_dirs(sub):
            return f"\nDid you mean {sub}?"
    return ""


def _detect_wildrf(root: Path) -> DatasetIndex:
    problems = DatasetProblems()
    samples: list[Sample] = []
    for split in ("train", "val"):
        d = root / split
        if d.is_dir():
            samples += _scan_classes(root, d, split, None, problems)
    test = root / "test"
    if test.is_dir():
        if _class_dirs(test):  # test/{0_real,1_fake} without platforms
            samples += _scan_classes(root, test, "test", None, problems)
        else:
            for platform_dir in sorted(p for p in test.iterdir() if p.is_dir() and _visible(p)):
                if _class_dirs(platform_dir):
                    samples += _scan_classes(root, platform_dir, "test", platform_dir.name, problems)
                else:
                    problems.ignored_entries.append(platform_dir)
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and _visible(entry) and entry.name not in SPLITS and entry.name != MASK_DIR:
            problems.ignored_entries.append(entry)
    return DatasetIndex(root, "wildrf", samples, problems)


def _parse_label(raw: str, where: str) -> int:
    key = raw.strip().lower()
    if key not in _LABEL_WORDS:
        raise DatasetLayoutError(f"{where}: label {raw!r} is not one of 0, 1, real, fake")
    return _LABEL_WORDS[key]


def _detect_csv(csv_path: Path) -> DatasetIndex:
    base = csv_path.parent
    problems = DatasetProblems()
    samples: list[Sample] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "path" not in header or "label" not in header:
            raise DatasetLayoutError(
                f"{csv_path}: the CSV header must contain 'path' and 'label' (optional 'split', 'platform', "
                f"'mask'); found {reader.fieldnames}\n\n{ACCEPTED_STRUCTURES}"
            )
        reader.fieldnames = header
        for row_no, row in enumerate(reader, start=2):
            where = f"{csv_path}, line {row_no}"
            if not (row.get("path") or "").strip():
                raise DatasetLayoutError(f"{where}: empty path")
            path = (base / row["path"].strip()).resolve()
            label = _parse_label(row.get("label") or "", where)
            split = (row.get("split") or "train").strip().lower() or "train"
            if split not in SPLITS:
                raise DatasetLayoutError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            platform = (row.get("platform") or "").strip() or None
            mask_raw = (row.get("mask") or "").strip()
            mask = (base / mask_raw).resolve() if mask_raw else None
            if not path.is_file():
                problems.missing_files.append(row["path"].strip())
                continue
            if not _is_image(path):
                problems.unknown_files.append(path)
                continue
            samples.append(Sample(path, label, split, platform, mask))
    return DatasetIndex(csv_path, "csv", samples, problems)


def _verify_readable(index: DatasetIndex) -> None:
    """Open every file's header; move the ones PIL cannot identify to ``problems.unreadable_files``."""
    from PIL import Image

    kept = []
    for s in index.samples:
        try:
            with Image.open(s.path) as img:
                img.verify()
            kept.append(s)
        except Exception:  # noqa: BLE001 - any decoding failure means unreadable
            index.problems.unreadable_files.append(s.path)
    index.samples = kept


def resolve_dataset(data: str | Path | DatasetIndex | None = None, progress: bool = True) -> DatasetIndex:
    """The dataset a command works on: an index as given, a root or CSV detected (:func:`detect_dataset`), or —
    when no data is given — the toy set (generated first if absent, :func:`~ladeda_lib.data.toy.ensure_toy_dataset`).
    """
    if isinstance(data, DatasetIndex):
        return data
    if data is None:
        from ladeda_lib.data.toy import ensure_toy_dataset

        data = ensure_toy_dataset(progress=progress)
    return detect_dataset(data)


def detect_dataset(path: str | Path, verify: bool = False, warn: bool = True) -> DatasetIndex:
    """Detect the layout at ``path`` (WildRF tree, single class folder, or CSV) and index its samples.

    ``verify=True`` also opens every file and reports unreadable ones. Problems are kept in
    ``index.problems`` and, with ``warn``, issued as one warning. Raises :class:`DatasetLayoutError`
    (with the found contents and the accepted trees) when nothing matches or no image is found.
    Introduced in notebook 02.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path does not exist: {path}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetLayoutError(f"{path} is a file but not a .csv file\n\n{ACCEPTED_STRUCTURES}")
        index = _detect_csv(path)
    elif any((path / s).is_dir() for s in SPLITS):
        index = _detect_wildrf(path)
    elif _class_dirs(path):
        problems = DatasetProblems()
        index = DatasetIndex(path, "folder", _scan_classes(path, path, "train", None, problems), problems)
    else:
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) == 1:
            index = _detect_csv(csvs[0])
        else:
            raise DatasetLayoutError(
                f"No dataset recognised at {path}\n\nFound there:\n{_describe_contents(path)}\n{_hint(path)}\n"
                f"{ACCEPTED_STRUCTURES}"
                + (f"\n\n{len(csvs)} CSV files found; pass the one to use." if len(csvs) > 1 else "")
            )
    if verify:
        _verify_readable(index)
    if not index.samples:
        raise DatasetLayoutError(
            f"No images found in {path} (layout {index.layout})\n{index.problems.report()}\n\n{ACCEPTED_STRUCTURES}"
        )
    index.samples.sort(key=lambda s: (_split_rank(s.split), s.platform or "", str(s.path)))
    if warn and index.problems:
        warnings.warn(f"dataset {path}:\n{index.problems.report()}", stacklevel=2)
    return index


def holdout_split(samples: list[Sample], fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministically split samples into (train, val) for layouts without splits.

    A sample goes to val when a hash of (seed, file name, label) falls below ``fraction``; the val samples
    get ``split="val"``. Stable when files are added or the folder moves. Introduced in notebook 02.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for s in samples:
        h = hashlib.sha256(f"{seed}:{s.label}:{s.path.name}".encode()).digest()
        if int.from_bytes(h[:8], "big") / 2**64 < fraction:
            val.append(Sample(s.path, s.label, "val", s.platform, s.mask))
        else:
            train.append(s)
    return train, val
