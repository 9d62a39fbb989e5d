"""Dataset input of ``difiisr-dwt upscale --dataset_name``: the rows of a Hub dataset or a local image folder
(read through ``datasets``) as the jobs of :mod:`difiisr_dwt.archive`, named so that a downloaded and a
streamed run of the same dataset write the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import PIL.Image

from difiisr_dwt.archive import Job, Source, output_name, plan_jobs, read_source
from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import read_frames


def _image_column(features, column: str | None, dataset: str) -> str:
    import datasets

    if features is None:  # a stream without metadata: trust the flag
        return column or "image"
    if column is None:
        found = [k for k, v in features.items() if isinstance(v, datasets.Image)]
        if not found:
            raise UsageError(f"{dataset} has no image column ({list(features)}); pass --image_column")
        return found[0]
    if column not in features:
        raise UsageError(f"--image_column {column!r} is not in {dataset}: {list(features)}")
    return column


def _row_source(dataset: str, index: int, item: dict, with_data: bool) -> Source:
    """A dataset row's source; named from its file name when the dataset keeps one, else its index."""
    file_name = Path(item.get("path") or "").name
    stem, suffix = (Path(file_name).stem, Path(file_name).suffix.lower()) if file_name else (f"{index:06d}", "")
    local = item.get("bytes") is None and item.get("path")
    return Source(name=f"{dataset}[{index}]" + (f" ({file_name})" if file_name else ""), stem=stem, suffix=suffix,
                  path=Path(local) if local else None, index=index,
                  data=item.get("bytes") if with_data else None)


def unique_row_stems(sources: Iterable[Source], suffix: str) -> Iterator[Source]:
    """Dataset rows with output stems that are distinct, by one rule that a stream can follow too.

    A row keeps its file's stem unless an earlier row's output took that name (compared case-insensitively);
    then its row index is appended (``sub1/a.png`` -> ``a_x4.png``, ``sub2/a.png`` at row 1 -> ``a_1_x4.png``).
    The name depends only on the row and the rows before it, so a downloaded and a streamed run of the
    same dataset write the same files, and either one's rerun finds the other's outputs.
    """
    taken: set[str] = set()
    for source in sources:
        stem = source.stem
        while output_name(stem, source.suffix, suffix).casefold() in taken:
            stem = f"{stem}_{source.index}"
        taken.add(output_name(stem, source.suffix, suffix).casefold())
        source.stem = stem
        yield source


def dataset_jobs(
    name: str, config: str | None, split: str, column: str | None, streaming: bool, output_dir: Path, suffix: str,
    state=None, skip: Callable[[Path], bool] | None = None,
) -> tuple[list[Job] | Iterator[Job], int | None, Callable[[Source], list[PIL.Image.Image]]]:
    """Jobs for a Hub dataset or a local folder (``imagefolder``) through ``datasets``.

    Rows are read undecoded (``datasets.Image(decode=False)``) so that every frame of a file is kept
    and a process decodes only its own rows. Without ``streaming`` the job list is planned whole
    (an output that would replace an input refused before compute, see :func:`plan_jobs`); a stream is
    planned as it goes. Both name the outputs by :func:`unique_row_stems`, so they write the same files.
    Rows of local files for which ``skip(path)`` is true (earlier outputs in the folder,
    :meth:`OutputLog.is_output`) are left out before naming.

    Returns:
        ``(jobs, total or None, read)``.
    """
    import contextlib

    import datasets

    first = state.main_process_first() if state is not None else contextlib.nullcontext()
    with first:  # one process downloads and prepares the cache; the others then read it
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    column = _image_column(ds.features, column, name)
    raw = ds.cast_column(column, datasets.Image(decode=False))
    if not streaming:
        import pyarrow.compute as pc

        table = raw.with_format("arrow")[:][column]
        paths = pc.struct_field(table, "path").to_pylist()
        local = pc.is_null(pc.struct_field(table, "bytes")).to_pylist()  # a local file, read from its path
        sources = [_row_source(name, i, {"path": p, "bytes": None if is_local else b""}, with_data=False)
                   for i, (p, is_local) in enumerate(zip(paths, local))]
        sources = [s for s in sources if not (skip and s.path is not None and skip(s.path))]

        def read(source: Source) -> list[PIL.Image.Image]:
            item = raw[source.index][column]
            return read_frames(item.get("path") or source.name, data=item.get("bytes"))

        return plan_jobs(list(unique_row_stems(sources, suffix)), output_dir, suffix), len(sources), read

    def stream() -> Iterator[Job]:
        rows = (_row_source(name, index, row[column], with_data=True) for index, row in enumerate(raw))
        rows = (source for source in rows if not (skip and source.path is not None and skip(source.path)))
        for source in unique_row_stems(rows, suffix):
            yield Job(source, output_dir / output_name(source.stem, source.suffix, suffix), source.index)

    splits = ds.info.splits or {}
    total = splits[split].num_examples if split in splits else None
    return stream(), total, read_source
