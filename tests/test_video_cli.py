"""``ladeda predict`` on videos and ``ladeda watch`` (ladeda_lib.video_cli): outputs, exit status, nothing half
written."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from conftest import write_audio_only
from test_video import noise_frames

from ladeda_lib.cli import main
from ladeda_lib.data.clips import write_video
from ladeda_lib.registry import get_entry

MODEL = str(get_entry("toy-student-augmented").path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    whole = write_video(root / "whole.mkv", noise_frames(40, seed=2))
    data = whole.read_bytes()
    (root / "cut.mkv").write_bytes(data[: int(len(data) * 0.5)])
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 200)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(noise_frames(1, (80, 80))[0]).save(root / "still.png")
    return {"whole": whole, "cut": root / "cut.mkv", "garbage": root / "garbage.mp4", "still": root / "still.png"}


def test_predict_a_video_and_an_image_together(clips, tmp_path: Path, capsys) -> None:
    rows, overlay = tmp_path / "frames.csv", tmp_path / "overlay.mp4"
    args = ["predict", str(clips["whole"]), str(clips["still"]), "--model", MODEL, "--json", "--every", "4"]
    assert main([*args, "--frames-out", str(rows), "--overlay", str(overlay), "--threads", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    image, clip = records
    assert image["file"] == str(clips["still"]) and image["error"] is None
    assert clip["kind"] == "video" and clip["frames_scored"] == 10 and clip["frames_decoded"] == 40
    assert clip["truncated"] is None and clip["verdict"] in ("real", "fake", "unsure")
    lines = rows.read_text().splitlines()
    assert len(lines) == 11 and lines[1].split(",")[1] == "0" and lines[2].split(",")[1] == "4"
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 40


def test_a_truncated_video_is_scored_reported_and_fails(clips, tmp_path: Path, capsys) -> None:
    rows = tmp_path / "frames.jsonl"
    assert main(["predict", str(clips["cut"]), "--model", MODEL, "--frames-out", str(rows)]) == 1
    out, err = capsys.readouterr()
    assert "TRUNCATED" in out and "truncated" in err
    scored = [json.loads(line) for line in rows.read_text().splitlines()]
    assert 5 <= len(scored) < 40 and [r["index"] for r in scored] == list(range(len(scored)))


@pytest.mark.parametrize("name", ["garbage", "missing", "no-stream"])
def test_unreadable_videos_fail_cleanly_and_write_nothing(name, clips, tmp_path: Path, capsys) -> None:
    source = {"garbage": clips["garbage"], "missing": tmp_path / "missing.mp4", "no-stream": clips["still"]}[name]
    if name == "no-stream":  # a PNG renamed .mp4 opens as an image stream in FFmpeg: use audio only instead
        source = tmp_path / "audio.mp4"
        write_audio_only(source)
    outputs = tmp_path / "out"
    code = main(
        [
            "predict",
            str(source),
            "--model",
            MODEL,
            "--frames-out",
            str(outputs / "f.csv"),
            "--overlay",
            str(outputs / "o.mp4"),
        ]
    )
    assert code == 1
    message = capsys.readouterr().out
    assert {"garbage": "cannot open as a video", "missing": "not found", "no-stream": "no video stream"}[
        name
    ] in message
    assert not outputs.exists()


def test_overlay_needs_exactly_one_video(clips, tmp_path: Path, capsys) -> None:
    code = main(
        ["predict", str(clips["whole"]), str(clips["whole"]), "--model", MODEL, "--overlay", str(tmp_path / "o.mp4")]
    )
    assert code == 1 and "exactly one video" in capsys.readouterr().err


def test_watch_a_file_opened_as_a_stream(clips, capsys) -> None:
    args = ["watch", str(clips["whole"]), "--model", MODEL, "--realtime", "--interval", "0", "--json", "--threads", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    updates = [json.loads(line) for line in out.splitlines()]
    assert updates and updates[-1]["scored"] == len(updates)
    assert updates[-1]["scored"] + updates[-1]["dropped"] == updates[-1]["decoded"] == 40
    assert "frames scored" in err and "dropped" in err
    assert main(["watch", str(clips["garbage"]), "--model", MODEL]) == 1
    assert "cannot open as a video" in capsys.readouterr().err


def test_stills_keep_the_reference_resize_unless_asked(clips, capsys) -> None:
    def probability(*extra: str) -> float:
        assert main(["predict", str(clips["still"]), "--model", MODEL, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["fake_probability"]

    from ladeda_lib.inference import InferencePipeline

    reference = InferencePipeline(MODEL).predict(clips["still"])["fake_probability"]
    assert probability() == pytest.approx(reference, abs=1e-6)  # the default is the reference path
    assert probability("--resize", "fast", "--draft") == pytest.approx(reference, abs=0.05)
