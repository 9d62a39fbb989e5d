"""Video and sequence I/O: PyAV round trips (rate, count, grey, 16-bit), resume of an interrupted sequence, CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from difiisr_dwt.archive import UpscaleOptions
from difiisr_dwt.cli import main
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import ImageReadError
from difiisr_dwt.output_folder import OUTPUT_LOG
from difiisr_dwt.sequence import SequenceRunner, frame_files, plan_sequence, split_inputs
from difiisr_dwt.video import probe_video, read_video_frames, write_video

NTSC = Fraction(30000, 1001)


def _frames(count=5, shape=(24, 32), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    high = 255 if dtype == np.uint8 else 60000
    return [rng.integers(0, high, shape).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (24, 32)), (np.uint16, (24, 32)), (np.uint8, (24, 32, 3))])
def test_lossless_round_trip_is_exact_and_keeps_rate_count_and_grey(tmp_path, dtype, shape):
    frames = _frames(5, shape, dtype)
    path = tmp_path / "clip.mkv"
    assert write_video(iter(frames), path, NTSC, lossless=True) == 5
    info = probe_video(path)
    assert info.frame_rate == NTSC and info.frame_count == 5 and (info.width, info.height) == (32, 24)
    assert info.grey == (len(shape) == 2) and info.bit16 == (dtype == np.uint16)
    back = list(read_video_frames(path, info))
    assert len(back) == 5
    for a, b in zip(back, frames):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_mp4_round_trip_keeps_rate_count_and_grey(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    frames = [np.roll(ramp, k, axis=1) for k in range(4)]
    path = tmp_path / "clip.mp4"
    write_video(frames, path, Fraction(25), lossless=False)
    info = probe_video(path)
    assert info.frame_rate == 25 and info.frame_count == 4 and info.grey and not info.bit16
    back = list(read_video_frames(path, info))
    assert len(back) == 4 and back[0].shape == (48, 64)
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(back, frames)) < 1.0  # H.264 at CRF 16


def test_mp4_without_x264_falls_back_to_mpeg4(tmp_path, monkeypatch):
    import av

    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    write_video([ramp] * 3, tmp_path / "clip.mp4", NTSC, lossless=False)
    info = probe_video(tmp_path / "clip.mp4")
    assert (info.frame_rate, info.frame_count, info.grey) == (NTSC, 3, True)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert np.abs(next(read_video_frames(tmp_path / "clip.mp4", info)).astype(int) - ramp).mean() < 2


def test_16bit_to_mp4_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(UsageError, match="--lossless"):
        write_video(_frames(2, dtype=np.uint16), tmp_path / "a.mp4", Fraction(25), lossless=False)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ImageReadError, match="bad.mp4: cannot read as a video"):
        probe_video(bad)
    with pytest.raises(ImageReadError, match="missing.mkv"):
        probe_video(tmp_path / "missing.mkv")


def test_split_inputs_and_frame_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in (10, 2, 1):
        PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"f{k}.png")
    (tmp_path / "a.mp4").write_bytes(b"")
    images, sequences = split_inputs([str(folder), str(tmp_path / "a.mp4"), "x.png"], sequence_folders=True)
    assert images == ["x.png"] and sequences == [folder, tmp_path / "a.mp4"]
    images, sequences = split_inputs([str(folder)], sequence_folders=False)
    assert images == [str(folder)] and sequences == []
    assert [p.name for p in frame_files(folder)] == ["f1.png", "f2.png", "f10.png"]
    job = plan_sequence(tmp_path / "a.mp4", tmp_path / "out", "_x4", lossless=True)
    assert job.output.name == "a_x4.mkv"


class BicubicPipe:
    """A stand-in pipeline: bicubic x4 in [0, 1] (or in the input's units under ``value_range``); it can be
    told to die after ``die_after`` calls, as a killed run would."""

    def __init__(self, die_after: int | None = None):
        self.calls, self.frames, self.die_after, self.kwargs = 0, 0, die_after, []

    def __call__(self, images, generator=None, output_type="np", value_range=None, **kwargs):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt
        self.calls, self.frames = self.calls + 1, self.frames + len(images)
        self.kwargs.append(kwargs)
        outs = []
        for image in images:
            x = torch.from_numpy(np.asarray(image, dtype=np.float64)).float()
            x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
            scale = 1.0 if value_range is not None else 255.0
            y = F.interpolate(x / scale, scale_factor=4, mode="bicubic", align_corners=False) * scale
            outs.append(y[0].permute(1, 2, 0).numpy())
        return SimpleNamespace(images=outs)


def _runner(pipe, overwrite=False):
    options = UpscaleOptions(batch_size=2, seed=0, overwrite=overwrite, pipeline_options={"num_inference_steps": 3})
    return SequenceRunner(pipe, options, {"model": "stand-in"}, show_progress=False)


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_killed_sequence_resumes_where_it_stopped(tmp_path, kind):
    frames = _frames(7, (12, 16))
    if kind == "video":
        source = tmp_path / "clip.mkv"
        write_video(frames, source, NTSC, lossless=True)
    else:
        source = tmp_path / "clip"
        source.mkdir()
        for k, frame in enumerate(frames):
            PIL.Image.fromarray(frame).save(source / f"{k:03d}.png")
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)

    def result(output):
        if kind == "video":
            return list(read_video_frames(output, probe_video(output)))
        return [np.asarray(PIL.Image.open(p)) for p in frame_files(output)]

    with pytest.raises(KeyboardInterrupt):  # killed during its third batch: four frames done
        _runner(BicubicPipe(die_after=2)).run(job)
    assert not job.output.exists()
    work = job.output.with_name(f".{job.output.name}.frames")
    (work / ".000004.png.k3j9.tmp").write_bytes(b"half a frame")  # a frame write killed midway
    resumed = BicubicPipe()
    record = _runner(resumed).run(job)
    assert record.status == "written" and record.frames == 7 and record.size == [64, 48]
    assert resumed.frames == 3  # only the frames the killed run had not written
    assert all(kwargs["prior_noise_scale"] == 0.0 for kwargs in resumed.kwargs)  # no per-frame noise draw
    done = result(job.output)
    assert len(done) == 7 and done[0].shape == (48, 64)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [job.output.name]  # work folder gone
    if kind == "folder":  # the frames only: no settings file, no leftover temporary file
        assert len(list(job.output.iterdir())) == 7
    uninterrupted = plan_sequence(source, tmp_path / "whole", "_x4", lossless=True)
    _runner(BicubicPipe()).run(uninterrupted)
    for a, b in zip(done, result(uninterrupted.output)):
        np.testing.assert_array_equal(a, b)

    again = BicubicPipe()
    assert _runner(again).run(job).status == "skipped" and again.calls == 0
    assert _runner(again, overwrite=True).run(job).status == "written" and again.frames == 7


def test_changed_settings_start_over(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(_frames(4, (12, 16)), source, Fraction(10), lossless=True)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(KeyboardInterrupt):
        _runner(BicubicPipe(die_after=1)).run(job)
    options = UpscaleOptions(batch_size=2, seed=1, pipeline_options={})  # another seed: frames made before differ
    pipe = BicubicPipe()
    SequenceRunner(pipe, options, {"model": "stand-in"}, show_progress=False).run(job)
    assert pipe.frames == 4


def test_sixteen_bit_sequence_gets_one_range_for_all_frames(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    levels = [3000, 3100, 3400]
    for k, level in enumerate(levels):  # flat frames at different levels: each comes back at its level
        PIL.Image.fromarray(np.full((8, 8), level, np.uint16)).save(source / f"{k}.png")
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    pipe = BicubicPipe()
    _runner(pipe).run(job)
    outs = [np.asarray(PIL.Image.open(p)) for p in frame_files(job.output)]
    assert [o.dtype for o in outs] == [np.uint16] * 3
    assert [int(o.mean().round()) for o in outs] == levels


def _video_and_folder(frames: list[np.ndarray], video, folder, name: str, first: int):
    """The same frames as a video (lossless for .mkv) and as a folder of numbered PNGs; returns the folder."""
    write_video(frames, video, NTSC, lossless=video.suffix == ".mkv")
    folder.mkdir()
    for k, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / name.format(k + first))
    return folder


def test_cli_video_and_sequence_folder(saved_test_model, tmp_path, capsys):
    folder = _video_and_folder(_frames(3, (12, 16)), tmp_path / "clip.mp4", tmp_path / "seq", "frame_{}.png", 0)
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "clip.mp4"), str(folder), "--sequence", "-o", str(out), "--model",
            str(saved_test_model), "--steps", "1", "--device", "cpu", "--batch-size", "2"]
    assert main(args) == 0
    assert "2 written" in capsys.readouterr().out
    info = probe_video(out / "clip_x4.mp4")
    assert (info.frame_rate, info.frame_count, info.width, info.height, info.grey) == (NTSC, 3, 64, 48, True)
    assert [p.name for p in frame_files(out / "seq_x4")] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert PIL.Image.open(out / "seq_x4" / "frame_0.png").size == (64, 48)
    assert main(args) == 0 and "0 written, 2 skipped" in capsys.readouterr().out
    # a frame added to the folder: its earlier output is not finished (it was "skipped" and the frame never
    # upscaled); the output log says what the folder was made from, so it is redone
    PIL.Image.fromarray(_frames(1, (12, 16))[0]).save(folder / "frame_3.png")
    assert main(args) == 0 and "1 written, 1 skipped" in capsys.readouterr().out
    assert len(frame_files(out / "seq_x4")) == 4
    # a folder an earlier version made (its log line does not say what from) is refused, not taken for done;
    # someone's file or folder of an output's name is not this tool's output either
    log = out / OUTPUT_LOG
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines() if '"folder": true' not in line))
    PIL.Image.fromarray(_frames(1, (12, 16))[0]).save(folder / "frame_4.png")
    assert main(args) == 1
    assert "seq_x4 holds 4 of the sequence's 5 frames" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0 and len(frame_files(out / "seq_x4")) == 5
    capsys.readouterr()
    other = tmp_path / "other"
    (other / "seq_x4").mkdir(parents=True)
    (other / "seq_x4" / "notes.txt").write_text("mine")
    (other / "clip_x4.mp4").write_bytes(b"my own video")
    args[args.index(str(out))] = str(other)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "clip_x4.mp4 exists and is no earlier output of this tool (it would be taken for a finished" in err
    assert "seq_x4 exists and holds other files than the sequence's frames (notes.txt)" in err
    assert (other / "seq_x4" / "notes.txt").read_text() == "mine"
    assert (other / "clip_x4.mp4").read_bytes() == b"my own video"


@pytest.mark.slow
def test_pan_is_stable_as_lossless_video_and_as_frame_folder(shared_dir, tmp_path, capsys):
    """Issue 19's acceptance: a 12-frame pan (a 128x96 window of a TNO image moved one LR pixel per frame),
    upscaled by the default model as a lossless video and as a frame folder: every output frame matches its
    predecessor moved by 4 px to >= 50 dB inside a 16 px border (the default image call, frame by frame,
    gives about 45 dB: its prior noise is fixed to the frame, not to the content); count and rate kept."""
    from difiisr_dwt.benchmarks.flicker import make_pan, psnr, shift_psnr

    image = np.asarray(PIL.Image.open(shared_dir / "data/ir/tno/01.png").convert("L"))
    pan = make_pan(image, frames=12, size=(128, 96), step=1)
    folder = _video_and_folder(pan, tmp_path / "pan.mkv", tmp_path / "pan_frames", "{}.png", 1)
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path / "pan.mkv"), str(folder), "--sequence", "--lossless", "-o", str(out),
                 "--device", "cpu", "--batch-size", "4"]) == 0
    info = probe_video(out / "pan_x4.mkv")
    assert (info.frame_rate, info.frame_count, info.width, info.height) == (NTSC, 12, 512, 384)
    videos = [f / 255.0 for f in read_video_frames(out / "pan_x4.mkv", info)]
    folder_frames = [np.asarray(PIL.Image.open(p)) / 255.0 for p in frame_files(out / "pan_frames_x4")]
    for outputs in (videos, folder_frames):
        assert len(outputs) == 12 and outputs[0].shape == (384, 512)
        flicker = shift_psnr(outputs, shift=4, border=16)
        assert min(flicker) >= 50.0, flicker
        # and it is not bicubic: the model's detail is there (moved with the content)
        bicubic = np.round(F.interpolate(torch.from_numpy(pan[0] / 255.0)[None, None], scale_factor=4,
                                         mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy() * 255) / 255
        assert psnr(outputs[0][16:-16, 16:-16], bicubic[16:-16, 16:-16]) < 56.0


def test_multi_page_tiff_is_sampled_as_a_sequence(tmp_path):
    """The frames of one multi-page TIFF share one call setup: no prior noise draw, one value range."""
    from difiisr_dwt.archive import Job, Source, sequence_call_options, upscale_jobs

    pages = [PIL.Image.fromarray(np.full((8, 8), level, np.uint16)) for level in (3000, 3100, 3400)]
    calls = []

    def pipe(images, generator=None, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(images=[image.resize((32, 32)) for image in images])

    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    job = Job(Source(str(path), "pages", ".tif", path), tmp_path / "pages_x4.tif", 0)
    single = Job(Source(str(path), "one", ".png", path), tmp_path / "one_x4.tif", 1)
    options = UpscaleOptions(batch_size=2, pipeline_options={"num_inference_steps": 2})
    upscale_jobs(pipe, [job, single], options, read=lambda s: pages if s.stem == "pages" else pages[:1])
    expected = sequence_call_options(pages[0], pages, {})
    low, high = expected["value_range"]
    assert expected["prior_noise_scale"] == 0.0 and low < 3000 < 3400 < high
    sequence_calls = [c for c in calls if "value_range" in c]
    assert len(sequence_calls) == 2  # 3 pages in batches of 2, the single image alone
    assert all(c["value_range"] == expected["value_range"] and c["prior_noise_scale"] == 0 for c in sequence_calls)
    assert [c for c in calls if "value_range" not in c] == [{"num_inference_steps": 2}]  # an image: as before
    assert sequence_call_options(pages[0], pages, {"value_range": (0, 9), "prior_noise_scale": 0.5}) == \
        {"prior_noise_scale": 0.5}  # what the user set wins


def test_float_frames_in_a_sequence_folder_are_refused_clearly(tmp_path):
    folder = tmp_path / "temps"
    folder.mkdir()
    PIL.Image.fromarray(np.full((8, 8), 21.5, np.float32)).save(folder / "0.tif")
    job = plan_sequence(folder, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(ImageReadError, match="float frames are not read as a sequence yet; .*--range"):
        _runner(BicubicPipe()).run(job)
    assert not job.output.exists()


def test_noise_options_warn_that_a_sequence_will_flicker(capsys):
    options = UpscaleOptions(pipeline_options={"noise_scale": 0.5, "prior_noise_scale": 0.0})
    SequenceRunner(BicubicPipe(), options, {}, show_progress=True)
    assert "warning: --noise-scale 0.5 draws noise in every frame" in capsys.readouterr().err
    SequenceRunner(BicubicPipe(), UpscaleOptions(pipeline_options={"noise_scale": 0.0}), {}, show_progress=True)
    assert capsys.readouterr().err == ""


def test_sixteen_bit_video_resumes_with_its_range(tmp_path):
    """The sequence's value range is part of the saved settings: a resumed 16-bit run keeps its frames."""
    source = tmp_path / "raw.mkv"
    write_video(_frames(5, (12, 16), np.uint16), source, Fraction(9), lossless=True)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(KeyboardInterrupt):
        _runner(BicubicPipe(die_after=1)).run(job)
    resumed = BicubicPipe()
    _runner(resumed).run(job)
    assert resumed.frames == 3
    info = probe_video(job.output)
    assert info.bit16 and info.frame_count == 5


def test_overwrite_replaces_only_what_this_tool_wrote(tmp_path):
    from difiisr_dwt.output_folder import OutputLog

    source = tmp_path / "clip.mkv"
    write_video(_frames(2, (12, 16)), source, Fraction(10), lossless=True)
    out = tmp_path / "out"
    out.mkdir()
    job = plan_sequence(source, out, "_x4", lossless=True)
    job.output.write_bytes(b"someone else's file")
    options = UpscaleOptions(overwrite=True, output_log=OutputLog(out))
    with pytest.raises(UsageError, match="no earlier output of this tool"):
        SequenceRunner(BicubicPipe(), options, {}, show_progress=False).run(job)
    assert job.output.read_bytes() == b"someone else's file"
    job.output.unlink()
    for _ in range(2):  # written and logged, then replaced by a later run: it is this tool's output
        options = UpscaleOptions(overwrite=True, output_log=OutputLog(out))
        assert SequenceRunner(BicubicPipe(), options, {}, show_progress=False).run(job).status == "written"

    folder = tmp_path / "frames"
    folder.mkdir()
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "0.png")
    frames_job = plan_sequence(folder, out, "_x4", lossless=True)
    frames_job.output.mkdir()
    (frames_job.output / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"holds other files than the sequence's frames \(notes.txt\)"):
        SequenceRunner(BicubicPipe(), options, {}, show_progress=False).run(frames_job)
    assert (frames_job.output / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_resume_starts_over_when_the_input_was_replaced(tmp_path, capsys, kind):
    """A killed run, then another clip of the same size and frame count at the same path: the frames the
    killed run made (of the old clip) were muxed into the new one's output."""
    old, new = _frames(4, (12, 16), seed=0), _frames(4, (12, 16), seed=1)
    source = tmp_path / ("clip.mkv" if kind == "video" else "clip")

    def put(frames):
        if kind == "video":
            write_video(frames, source, Fraction(10), lossless=True)
            return
        source.mkdir(exist_ok=True)
        for k, frame in enumerate(frames):
            PIL.Image.fromarray(frame).save(source / f"{k}.png")

    put(old)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(KeyboardInterrupt):  # two frames of the old clip done
        _runner(BicubicPipe(die_after=1)).run(job)
    put(new)
    capsys.readouterr()
    pipe = BicubicPipe()
    assert _runner(pipe).run(job).status == "written" and pipe.frames == 4  # every frame made again
    assert "its input changed" in capsys.readouterr().err
    whole = plan_sequence(source, tmp_path / "whole", "_x4", lossless=True)
    _runner(BicubicPipe()).run(whole)
    if kind == "video":
        done, expected = (list(read_video_frames(p, probe_video(p))) for p in (job.output, whole.output))
    else:
        done, expected = ([np.asarray(PIL.Image.open(p)) for p in frame_files(o)] for o in (job.output, whole.output))
    for a, b in zip(done, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_says_why_it_starts_over(tmp_path, capsys):
    source = tmp_path / "clip.mkv"
    write_video(_frames(4, (12, 16)), source, Fraction(10), lossless=True)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(KeyboardInterrupt):
        _runner(BicubicPipe(die_after=1)).run(job)
    capsys.readouterr()
    write_video(_frames(4, (12, 16), seed=3), source, Fraction(10), lossless=True)
    _runner(BicubicPipe()).run(job)
    err = capsys.readouterr().err
    assert "note: " in err and "discarding the 2 frame(s)" in err and "its input changed" in err


def test_truncated_video_is_written_with_a_warning(saved_test_model, tmp_path, capsys):
    """The first 75% of a 4-frame FFV1 MKV (duration 133 ms) decoded to 2 frames: "1 written", no word."""
    whole = tmp_path / "whole.mkv"
    write_video(_frames(4, (12, 16)), whole, Fraction(30), lossless=True)
    data = whole.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 3 // 4])
    out, manifest = tmp_path / "out", tmp_path / "run.json"
    assert main(["upscale", str(tmp_path / "cut.mkv"), "-o", str(out), "--lossless", "--manifest", str(manifest),
                 "--model", str(saved_test_model), "--steps", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "looks truncated: 2 of the 4 frames" in captured.err
    assert "1 written (1 with a warning" in captured.out
    (entry,) = json.loads(manifest.read_text())["files"]
    assert entry["status"] == "written" and entry["frames"] == 2 and "2 of the 4 frames" in entry["warning"]
    assert probe_video(out / "cut_x4.mkv").frame_count == 2


def test_folder_input_takes_its_videos_as_a_glob_does(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    write_video(_frames(2, (12, 16)), folder / "clip.mkv", Fraction(10), lossless=True)
    by_folder = split_inputs([str(folder)], sequence_folders=False)
    by_glob = split_inputs([str(folder / "*")], sequence_folders=False)
    assert by_folder[1] == by_glob[1] == [folder / "clip.mkv"]


def _clip(path, frames=8, pts_ms=None, audio_seconds=0.0, bit16=False):
    """A tiny 16x12 clip written by PyAV: grey FFV1 into .mkv (``gray16le`` when ``bit16``), H.264 ``yuv420p``
    into .mp4 (MPEG-4 Part 2 without x264); frames at 25 fps, or at ``pts_ms`` (a variable rate); AAC audio
    of ``audio_seconds`` beside them."""
    import av

    with av.open(str(path), "w") as container:
        if path.suffix == ".mkv":
            video = container.add_stream("ffv1", rate=25)
            video.pix_fmt = "gray16le" if bit16 else "gray"
        else:
            video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
            video.pix_fmt = "yuv420p"
        video.width, video.height = 16, 12
        if pts_ms is not None:
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=8000) if audio_seconds else None  # all streams before muxing
        if audio is not None:
            audio.layout = "mono"
        for k in range(frames):
            level = 1000 * (k + 1) if bit16 else 20 * k
            frame = av.VideoFrame.from_ndarray(np.full((12, 16), level, np.uint16 if bit16 else np.uint8),
                                               format="gray16le" if bit16 else "gray")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[k], Fraction(1, 1000)
            else:
                frame.pts = k
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            total = int(8000 * audio_seconds)
            for start in range(0, total, 1024):
                samples = np.arange(start, min(start + 1024, total))
                tone = (0.1 * np.sin(samples * 2 * np.pi * 440 / 8000)).astype(np.float32)[None]
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 8000, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode(None))
    return path


def test_16bit_video_for_mp4_is_refused_before_any_work(saved_test_model, tmp_path, capsys):
    """A gray16le FFV1 clip without --lossless was upscaled frame by frame, then refused at the mux, and its
    work folder (.clip16_x4.mp4.frames) stayed, even after a later --lossless run: now one error line, from
    the header, before the model loads; nothing in the output folder."""
    source = _clip(tmp_path / "clip16.mkv", frames=3, bit16=True)
    out = tmp_path / "out"
    args = ["upscale", str(source), "-o", str(out), "--model", str(saved_test_model), "--steps", "1", "--device",
            "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "clip16.mkv: a 16-bit video" in errors[0] and "use --lossless" in errors[0]
    assert not out.exists() or not any(out.iterdir())
    assert main(args + ["--lossless"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != ".difiisr-dwt-outputs.jsonl") == ["clip16_x4.mkv"]
    assert probe_video(out / "clip16_x4.mkv").bit16


def test_failed_sequence_leaves_no_work_folder_an_interrupted_one_keeps_it(tmp_path):
    from difiisr_dwt.sequence import SequenceJob

    # a 16-bit video meant for MP4 that reached the runner: refused before any frame is upscaled
    source = _clip(tmp_path / "raw.mkv", frames=3, bit16=True)
    job = SequenceJob(str(source), source, tmp_path / "out" / "raw_x4.mp4")
    pipe = BicubicPipe()
    with pytest.raises(UsageError, match="use --lossless"):
        _runner(pipe).run(job)
    assert pipe.frames == 0 and not job.output.with_name(".raw_x4.mp4.frames").exists()
    with pytest.raises(UsageError, match="raw.mkv: a 16-bit video"):  # planned: refused from the header
        plan_sequence(source, tmp_path / "out", "_x4", lossless=False)

    # a frame folder whose fifth frame has another size: four frames were done, then the run failed
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(_frames(4, (12, 16)) + _frames(1, (8, 8))):
        PIL.Image.fromarray(frame).save(folder / f"{k}.png")
    job = plan_sequence(folder, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(ImageReadError, match="frame 4 is"):
        _runner(BicubicPipe()).run(job)
    assert not job.output.exists() and not job.output.with_name(f".{job.output.name}.frames").exists()

    # an interrupted run keeps its frames for the next run to resume
    PIL.Image.fromarray(_frames(1, (12, 16))[0]).save(folder / "4.png")  # the odd frame fixed
    job = plan_sequence(folder, tmp_path / "out", "_x4", lossless=True)
    with pytest.raises(KeyboardInterrupt):
        _runner(BicubicPipe(die_after=1)).run(job)
    assert len(list(job.output.with_name(f".{job.output.name}.frames").glob("*.png"))) == 2


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_that_is_not_carried_over_is_warned_about(tmp_path, capsys, suffix):
    source = _clip(tmp_path / f"talk{suffix}", frames=4, audio_seconds=0.5)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=False)
    record = _runner(BicubicPipe()).run(job)
    assert record.status == "written" and record.frames == 4
    err = capsys.readouterr().err
    assert f"warning: {source}: its audio (1 stream) is not carried over" in err
    assert "audio (1 stream) is not carried over" in record.warning and "truncated" not in record.warning
    assert probe_video(source).audio_streams == 1
    silent = _clip(tmp_path / f"silent{suffix}", frames=4)
    record = _runner(BicubicPipe()).run(plan_sequence(silent, tmp_path / "out", "_x4", lossless=False))
    assert record.warning is None and "warning" not in capsys.readouterr().err


def test_mkv_with_longer_audio_is_not_called_truncated(tmp_path, capsys):
    """8 frames (0.32 s at 25 fps) and 2 s of AAC in one MKV: the container's duration (the audio's) gave
    "looks truncated: 8 of the 51 frames"; the video stream's own duration gives 8."""
    source = _clip(tmp_path / "clip.mkv", frames=8, audio_seconds=2.0)
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    record = _runner(BicubicPipe()).run(job)
    assert record.frames == 8 and "truncated" not in (record.warning or "")
    assert "truncated" not in capsys.readouterr().err
    out = probe_video(job.output)
    assert (out.frame_rate, out.frame_count) == (25, 8)
    info = probe_video(source)
    assert (info.frame_count, info.frame_count_from, info.duration) == (8, "stream duration", Fraction(8, 25))


@pytest.mark.parametrize("suffix, rate", [(".mkv", Fraction(200, 13)), (".mp4", Fraction(50, 3))])
def test_variable_rate_video_keeps_its_duration_and_is_not_called_truncated(tmp_path, capsys, suffix, rate):
    """8 frames at 0, 40, 80, 200, 240, 360, 440, 480 ms (nominal 25 fps). The MKV (0.52 s, its DURATION
    tag) was called truncated ("8 of the 13 frames") and written at 25 fps (0.32 s); now both are written at
    their average rate: 8 frames over the video's own duration (the MP4 says 0.48 s), as the MP4 was."""
    import av

    source = _clip(tmp_path / f"vfr{suffix}", frames=8, pts_ms=[0, 40, 80, 200, 240, 360, 440, 480])
    job = plan_sequence(source, tmp_path / "out", "_x4", lossless=True)
    record = _runner(BicubicPipe()).run(job)
    assert record.frames == 8 and record.warning is None and "truncated" not in capsys.readouterr().err
    out = probe_video(job.output)
    assert out.frame_rate == rate and out.frame_count == 8
    with av.open(str(job.output)) as container:  # microseconds: the output lasts as long as the input
        assert abs(container.duration / 1e6 - 8 / rate) < 0.01


def test_rate_and_truncation_go_by_the_frames_timestamps():
    from difiisr_dwt.video import FrameTimes, VideoInfo, output_rate, truncation_note

    def times(pts_ms, last_ms=None):
        collected = FrameTimes()
        for k, pts in enumerate(pts_ms):
            last = k == len(pts_ms) - 1
            collected.add(SimpleNamespace(pts=pts, time_base=Fraction(1, 1000),
                                          duration=last_ms if last else None))
        return collected

    ntsc = VideoInfo(NTSC, 300, 16, 12, True, False, "stream duration", Fraction(10010, 1000))
    regular = times([round(k * 1001 / 30) for k in range(300)], last_ms=33)  # Matroska's 1 ms timestamps
    assert output_rate(ntsc, regular) == NTSC and truncation_note(ntsc, 300, regular) is None
    cut = times([round(k * 1001 / 30) for k in range(200)], last_ms=33)
    assert output_rate(ntsc, cut) == NTSC and "200 of the 300 frames" in truncation_note(ntsc, 200, cut)
    vfr = VideoInfo(Fraction(25), 13, 16, 12, True, False, "stream duration", Fraction(52, 100))
    spread = times([0, 40, 80, 200, 240, 360, 440, 480], last_ms=40)
    assert output_rate(vfr, spread) == Fraction(200, 13) and truncation_note(vfr, 8, spread) is None
    assert output_rate(vfr, None) == 25  # no timestamps: the nominal rate
