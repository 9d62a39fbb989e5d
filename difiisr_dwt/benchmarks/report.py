"""Markdown rendering of :func:`difiisr_dwt.benchmarks.run_benchmarks` results."""

from __future__ import annotations

import json

_E2E_PARTS = ("encoder", "adapter", "unet", "decoder", "other")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[ok]


def _encoder(section: dict) -> list[str]:
    params = section["params"]
    lines = [
        f"### Encoder (preset `{section['preset']}`; times are medians)",
        "",
        f"Parameters: DWT encode {params['dwt_encode']:,} (with the adapter A: "
        f"{params['dwt_component_with_adapter']:,}); VQ-f4 encoder {params['vq_encoder']:,}.",
        "",
    ]
    rows = []
    for row in section["sizes"]:
        s = row["seconds"]
        rows.append([
            f"{row['width']}x{row['height']}", _ms(s["dwt_haar"]), _ms(s["dwt_ptwt"]), _ms(s["copy_floor"]),
            _ms(s["elementwise_floor"]), _ms(s["vq_encoder"]), f"{row['speedup_vq_over_dwt_haar']:,.0f}x",
            f"{row['speedup_vq_over_dwt_ptwt']:,.0f}x", f"{row['speedup_ptwt_over_haar']:.1f}x",
            f"{row['dwt_haar_over_copy']:.1f}x",
        ])
    header = [
        "output WxH", "DWT Haar ms", "DWT ptwt ms", "copy ms", "x*0.5 ms", "VQ enc ms",
        "VQ / Haar", "VQ / ptwt", "ptwt / Haar", "Haar / copy",
    ]
    return lines + _table(header, rows)


def _e2e(section: dict) -> list[str]:
    height, width = section["output_size"]
    params = section["params"]
    lines = [
        f"### End-to-end (preset `{section['preset']}`, output {width}x{height}; per configuration the median of "
        f"{section['repeats']} runs; LDM-SR one run)",
        "",
        f"Parameters: UNet {params['unet']:,}; VQ encoder {params['vq_encoder']:,}; VQ decoder "
        f"{params['vq_decoder']:,}; DWT encoder + adapter {params['dwt_encoder_and_adapter']:,}.",
        "",
    ]
    rows = []

    def add(name: str, steps: int, run: dict) -> None:
        split = run["split_s"]
        rows.append(
            [name, str(steps), f"{run['total_s']:.3g}"]
            + [f"{split.get(part, 0.0):.3g}" for part in _E2E_PARTS]
            + [f"{100 * split['other'] / run['total_s']:.2f}%", _mb(run["memory"]["peak_over_start_mb"])]
        )

    for entry in section["pipelines"]:
        add("DWT (ours)", entry["steps"], entry["dwt"])
        add("VQ-encoder start", entry["steps"], entry["vq_start"])
    if section["ldm"]:
        add("diffusers LDM-SR (DDIM)", section["ldm"]["steps"], section["ldm"])
    header = ["pipeline", "steps", "total s", *(f"{p} s" for p in _E2E_PARTS), "other %", "peak MB over start"]
    lines += _table(header, rows)
    lines += [""]
    ratio_rows = []
    for e in section["pipelines"]:
        c = e["component_seconds"]
        ratio_rows.append([
            str(e["steps"]), f"{c['dwt_encoder'] * 1e3:.3g}", f"{c['vq_encoder']:.3g}", f"{c['unet']:.3g}",
            f"{c['adapter'] * 1e3:.3g}", f"{c['decoder']:.3g}", f"{e['measured_ratio']:.3f}",
            f"{e['predicted_ratio']:.3f}", f"{abs(e['ratio_error']):.3f}",
            f"{e['predicted_isolated_ratio']:.3f}",
            f"{e['measured_cpu_ratio']:.3f} / {e['predicted_cpu_ratio']:.3f}",
        ])
    header = [
        "steps", "E ms", "Enc s", "UNet s", "A ms", "decoder s", "measured DWT / VQ-start (median of pairs)",
        "predicted", "abs error",
        "predicted from components timed alone", "CPU-time ratio measured / predicted (alone)",
    ]
    lines += _table(header, ratio_rows)
    lines += [
        "",
        "Component columns: median seconds per call inside the measured runs (shared components pooled "
        "over both pipelines); predicted = (E + T(UNet + A) + dec) / (Enc + A + T(UNet + A) + dec). "
        "The cross-check column uses the components timed alone (fastest call) before each block.",
    ]
    acc = section["acceptance"]
    if section["preset"] != "full":
        lines += ["", f"(preset `{section['preset']}`: a smoke run; the acceptance figures are for the `full` preset)"]
    lines += [
        "",
        f"- Time outside DWT/UNet/VQ calls at {acc['other_share_steps']} steps: {100 * acc['other_share']:.2f}% "
        f"(limit {100 * acc['other_share_limit']:.0f}%): **{_verdict(acc['other_share_ok'])}**",
        f"- Ratio within {acc['ratio_tolerance']} of the prediction at every step count: "
        f"**{_verdict(acc['ratio_ok'])}**",
    ]
    return lines


def _tiling(section: dict) -> list[str]:
    st = section["settings"]
    lines = [
        f"### Tiling (preset `{st['preset']}`, {st['steps']} steps, tile {st['tile_size']}/{st['tile_overlap']} LR px, "
        f"decode tile {st['decode_tile_size']}/{st['decode_tile_overlap']}; "
        + ("one fresh process per size)" if st["isolated"] else "all sizes in this process)"),
        "",
    ]
    rows = [
        [f"{r['size']}x{r['size']}", f"{r['seconds']:.3g}", _mb(r["peak_rss_mb"]), _mb(r["start_rss_mb"]),
         _mb(r["peak_over_start_mb"])]
        for r in section["sizes"]
    ]
    lines += _table(["output", "seconds", "peak RSS MB", "RSS before call MB", "peak over start MB"], rows)
    acc = section["acceptance"]
    small, large = acc["sizes"]
    ratio = acc.get("peak_over_start_mb_ratio")
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}x"
    total_ratio = acc.get("peak_rss_mb_ratio")
    total_text = "n/a" if total_ratio is None else f"{total_ratio:.2f}x"
    lines += [
        "",
        f"- Peak memory {large}^2 / {small}^2: {ratio_text} over the pre-call baseline ({total_text} of the whole "
        f"process), limit {acc['limit']:.0f}x: **{_verdict(acc['ok'])}**",
    ]
    return lines


def _train(section: dict) -> list[str]:
    lines = [
        f"### Training throughput (diffusion stage, preset `{section['preset']}`, {section['resolution']}-pixel "
        f"crops, {section['num_processes']} process(es))",
        "",
    ]
    rows = [[str(section["batch"]), f"{section['samples_per_s']:.3g}", _ms(section["s_per_step"]),
             f"{100 * section['data_wait_share']:.1f}%", str(section["timed_steps"])]]
    return lines + _table(["batch", "samples/s", "ms/step", "data wait", "timed steps"], rows)


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _gpu(section: dict) -> list[str]:
    lines = [
        f"### Accelerator path (`{section['model']}` on `{section['device']}`"
        + (", quick)" if section["quick"] else ")"),
        "",
    ]
    rows = [[record["check"], ", ".join(f"{k} {_value(v)}" for k, v in record.items() if k != "check")]
            for record in section["checks"]]
    return lines + _table(["check", "result"], rows)


def _cost(section: dict) -> list[str]:
    st = section["settings"]
    lines = [f"### CPU cost of the default call (`{st['model']}`, {st['threads']} threads)", ""]
    missing = [part for part in ("components", "sizes") if part not in section]
    if missing:  # an interrupted run's partial JSON
        lines += [f"Not measured (the run stopped first): {', '.join(missing)}."]
    if "components" in section:
        comp = section["components"]
        split = comp["per_call"]
        parts = ("encode", "unet", "adapter", "decode", "fidelity", "other", "total")
        lines += [f"Per-component split, one {comp['size'][0]}x{comp['size'][1]} frame, mean of {comp['repeats']} "
                  "calls after a warm-up (seconds per call):", ""]
        lines += _table(["clock", *parts], [[clock.replace("_s", ""), *(f"{split[clock][p]:.3g}" for p in parts)]
                                              for clock in ("cpu_s", "wall_s")])
    if "sizes" in section:
        lines += ["", "Without tiling, one fresh process per size (seconds per call; decode per output megapixel):",
                  ""]
        rows = [[f"{r['lr_size'][0]}x{r['lr_size'][1]}", f"{16 * r['lr_size'][0] * r['lr_size'][1] / 1e6:.3g}",
                 f"not finished within {r['timed_out_s']:.0f} s (capped)", *[""] * 5] if "timed_out_s" in r else
                [f"{r['lr_size'][0]}x{r['lr_size'][1]}", f"{r['output_megapixels']:.3g}",
                 f"{r['split']['cpu_s']['total']:.3g}", f"{r['split']['cpu_s']['decode']:.3g}",
                 f"{r['decode_cpu_s_per_mp']:.3g}", f"{r['decode_wall_s_per_mp']:.3g}", _mb(r["peak_rss_mb"]),
                 _mb(r["peak_over_start_mb"])] for r in section["sizes"]]
        lines += _table(["LR", "output MP", "call CPU s", "decode CPU s", "decode CPU s/MP", "decode wall s/MP",
                         "peak RSS MB", "peak over start MB"], rows)
    process = section.get("process")
    if process is not None:
        lines += [""]
        if "skipped" in process:
            lines += [f"Whole process vs Real-ESRGAN: skipped ({process['skipped']})."]
        else:
            lines += [f"Whole process vs Real-ESRGAN x4plus (`{process['realesrgan']}`), median of {st['repeats']} "
                      "runs after a warm-up, alternating order:", ""]
            rows = []
            for f in process["folders"].values():
                ours, theirs = f["median"]["ours"], f["median"]["realesrgan"]
                rows.append([str(f["frames"]), f"{ours['cpu_s']:.3g}", f"{theirs['cpu_s']:.3g}",
                             f"**{f['cpu_ratio']:.2f}**", f"{ours['wall_s']:.3g}", f"{theirs['wall_s']:.3g}",
                             f"{f['wall_ratio']:.2f}"])
            lines += _table(["frames", "ours CPU s", "Real-ESRGAN CPU s", "CPU ratio", "ours wall s",
                             "Real-ESRGAN wall s", "wall ratio"], rows)
    if "startup" in section:
        median, processes = section["startup"]["median"], len(section["startup"]["runs"])
        lines += ["", f"Start-up of a fresh process, CPU seconds per stage (median of {processes} processes):", ""]
        lines += _table(list(median), [[f"{value:.3g}" for value in median.values()]])
    if "channels_last" in section:
        cl = section["channels_last"]
        lines += ["", f"Decode from channels-last latents (default) vs contiguous ones, same process: CPU ratio "
                  f"**{cl['cpu_ratio']:.2f}** ({cl['median_cpu_s']['channels_last']:.3g} vs "
                  f"{cl['median_cpu_s']['contiguous']:.3g} s per call), outputs within {cl['max_abs_diff_grey']:.2g} "
                  "grey levels."]
    return lines


def format_markdown(results: dict) -> str:
    """All measured sections as markdown tables with the acceptance verdicts."""
    meta = results["meta"]
    lines = [
        f"## difiisr-dwt benchmark ({meta['date_utc']}, torch {meta['torch']}, {meta['torch_threads']} threads, "
        f"{meta['cpu_count']} CPUs, load average before {meta['load_average_before'][0]:.2f})"
        if meta.get("load_average_before") else
        f"## difiisr-dwt benchmark ({meta['date_utc']}, torch {meta['torch']}, {meta['torch_threads']} threads)",
        "",
    ]
    for key, render in (("encoder", _encoder), ("end_to_end", _e2e), ("tiling", _tiling), ("train", _train),
                        ("gpu", _gpu), ("cost", _cost)):
        if key in results:
            lines += render(results[key]) + [""]
    return "\n".join(lines)
