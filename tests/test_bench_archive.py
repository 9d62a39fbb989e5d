"""The archive section of the benchmarks (batch sizes here; the process comparison launches
accelerate and is run by hand: ``python -m difiisr_dwt.benchmarks.archive --quick``)."""

from __future__ import annotations

from dataclasses import replace

from difiisr_dwt.benchmarks.archive import QUICK_ARCHIVE, bench_archive, format_archive


def test_archive_bench_reports_images_per_second_per_batch_size():
    result = bench_archive(replace(QUICK_ARCHIVE, processes=()))
    assert set(result["batches"]) == {"1", "4"}
    for row in result["batches"].values():
        assert row["images_per_s"] > 0 and len(row["rounds_images_per_s"]) == QUICK_ARCHIVE.rounds
    assert result["batches"]["1"]["ratio"] == 1.0
    table = format_archive(result)
    assert "| 4 |" in table and "vs batch 1" in table and "not measured" in table
