"""Video input (ladeda_lib.video): sampling, timestamps, smoothing and segments, the clip report, the overlay,
bad and truncated files, and the live reader on a file opened as a stream. Clips are encoded here with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_audio_only

from ladeda_lib.data.clips import toy_clip_frames, write_video
from ladeda_lib.inference import InferencePipeline
from ladeda_lib.registry import get_entry
from ladeda_lib.video import (
    FrameReader,
    FrameSampler,
    VideoError,
    find_segments,
    score_video,
    smooth_track,
    watch,
    write_frame_rows,
    write_overlay,
)

FPS = 25


def noise_frames(n: int, size: tuple[int, int] = (64, 96), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 noisy 96×64 frames at 25 frames/s (1.2 s) in an MKV."""
    return write_video(tmp_path_factory.mktemp("clip") / "noise.mkv", noise_frames(30))


@pytest.fixture(scope="module")
def pipe() -> InferencePipeline:
    return InferencePipeline(get_entry("toy-student-augmented").path, threads=1)


@pytest.fixture(scope="module")
def toy_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s pan over toy scene 0 at 10 frames/s whose frames from 1.0 s to 2.0 s are generated."""
    frames = toy_clip_frames(0, seconds=3, fps=10, fake_start=1.0, fake_end=2.0)
    return write_video(tmp_path_factory.mktemp("toy") / "toy.mp4", frames, fps=10)


# -- sampling and timestamps ----------------------------------------------------------------------------
def test_sampler_every_and_fps() -> None:
    every = FrameSampler(every=3)
    assert [i for i in range(10) if every.take(i, i / 30)] == [0, 3, 6, 9]
    by_rate = FrameSampler(fps=10)
    assert [i for i in range(12) if by_rate.take(i, i / 30)] == [0, 3, 6, 9]
    jittery = FrameSampler(fps=2)  # variable frame times: one frame per half-second slot
    assert [t for t in (0.0, 0.2, 0.49, 0.51, 0.9, 1.7, 1.8) if jittery.take(0, t)] == [0.0, 0.51, 1.7]
    with pytest.raises(ValueError, match="every"):
        FrameSampler(every=0)
    with pytest.raises(ValueError, match="not both"):
        FrameSampler(every=2, fps=5)


def test_reader_gives_indices_times_and_model_input(clip: Path) -> None:
    frames = list(FrameReader(clip))
    assert [f.index for f in frames] == list(range(30))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(30)], abs=1e-6)
    assert frames[0].image.shape == (3, 256, 256) and frames[0].image.dtype.is_floating_point is False
    assert frames[0].size == (96, 64)
    sampled = FrameReader(clip, FrameSampler(fps=5))
    assert [f.index for f in sampled] == [0, 5, 10, 15, 20, 25]
    assert sampled.decoded == 30 and sampled.truncated is None


def test_scaler_path_gives_the_same_shape_and_keep_rgb(clip: Path) -> None:
    frame = next(iter(FrameReader(clip, resize="scaler", keep_rgb=True)))
    assert frame.image.shape == (3, 256, 256) and frame.rgb.shape == (64, 96, 3)


# -- smoothing and segments -----------------------------------------------------------------------------
def test_median_smoothing_keeps_a_step_and_drops_short_outliers() -> None:
    t = np.arange(100) / 25  # 4 s at 25 frames/s, fake from 1.0 s to 3.0 s
    p = np.where((t >= 1.0) & (t < 3.0), 0.8, 0.2)
    p[10] = 0.95  # a single false alarm at 0.4 s
    p[60] = 0.05  # a single miss inside the fake segment
    s = smooth_track(t, p, window=0.5)
    assert s[10] == pytest.approx(0.2) and s[60] == pytest.approx(0.8)
    assert find_segments(t, s, 0.5, min_duration=0.3, frame_duration=1 / 25) == [(1.0, 3.0)]
    assert smooth_track(t, p, 0.0) == pytest.approx(p)


def test_find_segments_boundaries_and_minimum_length() -> None:
    t = np.arange(0.0, 10.0, 0.5)  # sampled every 0.5 s; each frame lasts 0.1 s
    v = np.zeros_like(t)
    v[(t >= 2.0) & (t <= 4.0)] = 1.0  # samples 2.0 … 4.0 fake
    v[-2:] = 1.0  # a run at the very end
    segments = find_segments(t, v, 0.5, frame_duration=0.1)
    assert segments == [(1.8, 4.3), (8.8, 9.6)]  # halfway between the frames either side; last frame's end
    assert find_segments(t, v, 0.5, min_duration=1.0, frame_duration=0.1) == [(1.8, 4.3)]
    assert find_segments(t, np.zeros_like(t), 0.5) == []


# -- scoring a clip ---------------------------------------------------------------------------------------
def test_score_video_finds_the_generated_frames(pipe: InferencePipeline, toy_clip: Path) -> None:
    report = score_video(pipe, toy_clip, smooth=0.5, min_segment=0.3)
    assert len(report.rows) == 30 and report.decoded == 30 and report.truncated is None
    ((start, end),) = report.segments
    # generated frames 1.0-2.0 s; measured: boundaries 1.0 and 2.0, real frames p <= 0.41, generated >= 0.81
    assert abs(start - 1.0) <= 0.2 and abs(end - 2.0) <= 0.2, report.segments
    assert report.verdict == "fake"
    summary = report.summary()
    json.dumps(summary)
    assert summary["frames_scored"] == 30 and summary["segments"] == [[start, end]]
    every_other = score_video(pipe, toy_clip, every=2, smooth=0.5, min_segment=0.3)
    assert [r["index"] for r in every_other.rows] == list(range(0, 30, 2))


def test_overlay_has_the_clips_size_and_frame_count(pipe: InferencePipeline, clip: Path, tmp_path: Path) -> None:
    report = score_video(pipe, clip, every=3)
    out = write_overlay(pipe, clip, tmp_path / "overlay.mp4", report)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 30 and frames[0].shape == (64, 96, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]  # no partial file left behind
    with pytest.raises(ValueError, match="overwrite"):
        write_overlay(pipe, clip, clip, report)


def test_frame_rows_are_written_whole_as_csv_or_jsonl(tmp_path: Path) -> None:
    rows = [{"file": "a.mp4", "index": 0, "time": 0.0, "fake_probability": 0.2, "logit": -1.4, "verdict": "real"}]
    rows[0]["smoothed"] = 0.2
    text = write_frame_rows(tmp_path / "rows.csv", rows).read_text()
    assert text.splitlines()[0] == "file,index,time,fake_probability,logit,verdict,smoothed"
    assert json.loads(write_frame_rows(tmp_path / "rows.jsonl", rows).read_text())["verdict"] == "real"
    with pytest.raises(ValueError, match="jsonl or .csv"):
        write_frame_rows(tmp_path / "rows.txt", rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.jsonl"]


# -- bad input --------------------------------------------------------------------------------------------
def test_truncated_video_is_scored_up_to_the_cut_and_reported(pipe: InferencePipeline, tmp_path: Path) -> None:
    whole = write_video(tmp_path / "whole.mkv", noise_frames(50, seed=1))
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    report = score_video(pipe, cut)
    assert 10 <= len(report.rows) < 50  # frames up to the cut (29 here)
    assert report.truncated is not None and "declares" in report.truncated
    assert score_video(pipe, whole).truncated is None


def test_unreadable_inputs_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        FrameReader(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="cannot open as a video"):
        FrameReader(garbage)
    audio = tmp_path / "audio.m4a"
    write_audio_only(audio)
    with pytest.raises(VideoError, match="no video stream"):
        FrameReader(audio)


# -- streams -----------------------------------------------------------------------------------------------
def test_watch_a_file_as_a_stream_counts_what_it_drops(pipe: InferencePipeline, clip: Path) -> None:
    updates = list(watch(pipe, str(clip), realtime=True, smooth=0.5))
    last = updates[-1]
    assert last["decoded"] == 30 and 1 <= last["scored"] == len(updates)
    assert last["scored"] + last["dropped"] == 30  # every decoded frame was either scored or dropped
    assert all(u["verdict"] in ("real", "fake") for u in updates)
    assert [u["time"] for u in updates] == sorted(u["time"] for u in updates)
    assert len(list(watch(pipe, str(clip), max_frames=3))) == 3


# -- generated clips ----------------------------------------------------------------------------------------
def test_toy_clip_frames_switch_to_the_generated_image_inside_the_segment() -> None:
    frames = list(toy_clip_frames(0, seconds=1.0, fps=10, fake_start=0.4, fake_end=0.7))
    assert len(frames) == 10 and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
    assert np.array_equal(frames[1][:, :-1], frames[0][:, 1:])  # the window pans one pixel per frame
    assert not np.array_equal(frames[4][:, :-1], frames[3][:, 1:])  # frame 4 (0.4 s) is the generated image
    assert np.array_equal(frames[5][:, :-1], frames[4][:, 1:])
    assert not np.array_equal(frames[7][:, :-1], frames[6][:, 1:])  # back to the photograph at 0.7 s
