"""An output folder: a writability probe, the removal of folders a failed run made and left empty (upscale,
training), the cleanup of temporary files an interrupted run left, and the log that tells this tool's earlier
outputs from inputs (:mod:`difiisr_dwt.archive` uses them)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from difiisr_dwt.errors import UsageError
from difiisr_dwt.io import file_digest, temp_writer_gone

#: Kept in every output folder: one JSON line per output written (``{"output", "size", "sha256"}``), so that
#: a later run into the same folder takes these files for outputs, not inputs.
OUTPUT_LOG = ".difiisr-dwt-outputs.jsonl"


def check_writable(folder: Path, what: str = "output folder") -> None:
    """Create ``folder`` and write a probe file in it, so that a bad ``-o`` fails before the model loads.

    Args:
        folder: the folder to write into.
        what: how messages name it (``"output folder"``, ``"--manifest's folder"``).

    Raises:
        UsageError: the folder cannot be created or written, with the reason.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"{what} {folder} is not writable ({error.strerror or error})") from error


@contextlib.contextmanager
def removed_if_left_empty(folder: str | os.PathLike) -> Iterator[None]:
    """Run the body; then, whether it failed or not, remove ``folder`` and the parents it is about to get if
    they are still empty, so that a run that wrote nothing leaves no trace. A folder that existed before, or
    holds anything, stays (and so do those above it).

    Only the main process of an ``accelerate launch`` (``RANK`` 0, or a run without one) removes anything: the
    others must not remove a folder it has yet to write into. The rank is read from the environment, known
    before accelerate starts (a run may fail before it does).

    Args:
        folder: the run's output folder (it need not exist yet).
    """
    made = [Path(folder).absolute(), *Path(folder).absolute().parents]
    made = made[: next(i for i, path in enumerate(made) if path.exists())]
    try:
        yield
    finally:
        if made and os.environ.get("RANK", "0") == "0":
            with contextlib.suppress(OSError):  # one not empty, or gone: it and those above it stay
                for path in made:
                    path.rmdir()


def remove_stale_temps(folder: Path, names: Iterable[str], before: float) -> int:
    """Delete the temporary files (``.NAME.*.tmp``, see :func:`difiisr_dwt.io.write_atomic`) that an
    interrupted run left for the outputs ``names``.

    Only files whose writer is gone are taken (:func:`difiisr_dwt.io.temp_writer_gone`: the pid in the
    name is not running on this machine), so a run sharing the folder never deletes a live run's file.
    A name without a writer's token (an older version's) goes when older than ``before`` (a
    ``time.time()``). Returns how many were removed.
    """
    wanted = set(names)
    removed = 0
    for path in folder.glob(".*.tmp"):
        gone = temp_writer_gone(path.name)
        # ".a_x4.png.k3j9.p123-0a1b2c3d.tmp" / ".a_x4.png.k3j9.tmp" -> "a_x4.png"
        name = path.name[1:].rsplit(".", 3 if gone is not None else 2)[0]
        try:
            if name in wanted and (gone or (gone is None and path.stat().st_mtime < before)):
                path.unlink()
                removed += 1
        except OSError:  # gone already: another run cleaned it
            pass
    return removed


def files_fingerprint(files: list[Path], chunk: int = 1 << 20) -> dict:
    """What identifies the content of an input made of ``files`` (an image, a video, a sequence's frames):
    their number, total size and one SHA-256 over every file's name, size and bytes. Modification times are
    left out: a copy without them (``cp`` without ``-p``, a checkout) is the same input. Reading costs a
    second or so per GB, far less than upscaling one frame.

    Raises:
        OSError: a file cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    for path in files:
        st = path.stat()
        size += st.st_size
        digest.update(f"{path.name}\0{st.st_size}\0".encode())
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return {"files": len(files), "size": size, "sha256": digest.hexdigest()}


def file_fingerprint(path: Path | None) -> dict | None:
    """The :func:`files_fingerprint` of one input file; ``None`` for no file (standard input, a dataset row)
    or one that cannot be read (the read that follows names the problem)."""
    if path is None:
        return None
    try:
        return files_fingerprint([path])
    except OSError:
        return None


class OutputLog:
    """The :data:`OUTPUT_LOG` of an output folder: which of its files this tool wrote, and from what.

    Each process appends one line per output, right after the output is renamed into place (a short
    ``O_APPEND`` write, so processes and runs sharing the folder do not mix their lines); a line cut
    by a kill, or one that is not JSON, is ignored when read. A file counts as an earlier output while its
    size and SHA-256 are those logged: a file edited or replaced since is an input again. A sequence's frame
    folder is logged with the size and SHA-256 of each of its files (:meth:`foreign_files`). The line also
    holds the :func:`files_fingerprint` of the input files it was made from, so that an input changed since
    (same name, other content) is seen (:meth:`input_changed`) and upscaled again.
    """

    def __init__(self, folder: Path, manifest: Path | None = None):
        self.folder, self.path = folder, folder / OUTPUT_LOG
        self._real = os.path.realpath(folder)
        self._logged: dict[str, set[tuple[int, str]]] | None = None
        self._made_from: dict[tuple[str, int, str], set[str]] = {}  # (name, size, sha256) -> input SHA-256s
        # (name, size, sha256) of a file output, or (name,) of a frame folder -> its inputs' fingerprints
        self._inputs: dict[tuple, list[tuple[dict, str | None]]] = {}  # ... -> [(fingerprint, input's real path)]
        self._folders: dict[str, dict[str, tuple[int, str]]] = {}  # frame folder -> {file: (size, sha256)}
        self._digests: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> SHA-256
        self._listed = self._manifest_outputs(manifest) if manifest is not None else set()

    def add(self, output: Path, input_sha256: str | None = None, input: dict | None = None,
            input_path: Path | None = None) -> None:
        """Log ``output`` (a file, or a sequence's frame folder); ``input_sha256``: the SHA-256 of the bytes it
        was made from, for an input that has no file to compare later (standard input, a pipe: see
        :meth:`made_from`); ``input``: the :func:`files_fingerprint` of the files it was made from, at
        ``input_path`` (a file, a video, a frame folder)."""
        if output.is_dir():
            files = {p.name: [p.stat().st_size, file_digest(p)] for p in sorted(output.iterdir()) if p.is_file()}
            entry = {"output": output.name, "folder": True, "files": files}
        else:
            entry = {"output": output.name, "size": output.stat().st_size, "sha256": file_digest(output)}
        if input_sha256 is not None:
            entry["input_sha256"] = input_sha256
        if input is not None:
            entry["input"] = input
        if input_path is not None:
            entry["input_path"] = os.path.realpath(input_path)
        with open(self.path, "a+b") as f:
            # after a line cut short (a kill, a full disk) this one starts on its own line: only that one is lost
            end = os.fstat(f.fileno()).st_size
            cut = end > 0 and os.pread(f.fileno(), 1, end - 1) != b"\n"
            f.write((("\n" if cut else "") + json.dumps(entry) + "\n").encode())

    def _read(self) -> dict[str, set[tuple[int, str]]]:
        if self._logged is None:
            self._logged = {}
            try:
                lines = self.path.read_bytes().splitlines()
            except OSError:
                lines = []
            for line in lines:
                try:
                    entry = json.loads(line)  # bytes: a line that is not UTF-8 is a ValueError, that line only
                    if entry.get("folder") is True:  # the latest line of a frame folder is the one that holds
                        files = {str(k): (int(v[0]), str(v[1])) for k, v in entry["files"].items()}
                        key = (str(entry["output"]),)
                        self._inputs[key], self._folders[key[0]] = [], files
                    else:
                        key = (entry["output"], int(entry["size"]), entry["sha256"])
                        self._logged.setdefault(key[0], set()).add(key[1:])
                    if isinstance(entry.get("input_sha256"), str):
                        self._made_from.setdefault(key, set()).add(entry["input_sha256"])
                    if isinstance(entry.get("input"), dict):
                        path = entry.get("input_path") if isinstance(entry.get("input_path"), str) else None
                        self._inputs.setdefault(key, []).append((entry["input"], path))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        return self._logged

    def _manifest_outputs(self, manifest: Path) -> set[str]:
        """Names of this folder's outputs that an earlier ``--manifest`` (the one this run rewrites) lists."""
        try:
            files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return set()
        return {Path(entry["output"]).name for entry in files if isinstance(entry, dict)
                and entry.get("status") in ("written", "skipped") and isinstance(entry.get("output"), str)
                and os.path.realpath(Path(entry["output"]).parent) == self._real}

    def is_output(self, path: Path) -> bool:
        """Whether ``path`` is an output an earlier run wrote into this folder."""
        if os.path.realpath(path.parent) != self._real:
            return False
        if path.name in self._listed:
            return True
        logged = self._read().get(path.name)
        if not logged:
            return False
        try:
            size = path.stat().st_size
            return any(size == s for s, _ in logged) and self._sized_digest(path) in logged
        except OSError:
            return False

    def made_from(self, path: Path, input_sha256: str) -> bool:
        """Whether ``path`` is, as it is now, the output this tool made from input bytes of SHA-256
        ``input_sha256`` (logged by :meth:`add`)."""
        if os.path.realpath(path.parent) != self._real:
            return False
        self._read()
        try:
            key = (path.name, *self._sized_digest(path))
        except OSError:
            return False
        return input_sha256 in self._made_from.get(key, ())

    def _sized_digest(self, path: Path) -> tuple[int, str]:
        """``(size, SHA-256)`` of the file ``path``, hashed once while its size and modification time stay: a
        rerun asks of each existing output whether it is this tool's, and what it was made from.

        Raises:
            OSError: the file cannot be read.
        """
        st = path.stat()
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return st.st_size, self._digests[key]

    def _made_from_inputs(self, output: Path) -> list[tuple[dict, str | None]]:
        """``[(fingerprint, real path)]`` of the inputs ``output`` (a file as it is now, or a frame folder) was
        logged as made from; empty when the log does not say (an earlier version's line, not this folder)."""
        if os.path.realpath(output.parent) != self._real:
            return []
        self._read()
        try:
            key = (output.name,) if output.is_dir() else (output.name, *self._sized_digest(output))
        except OSError:
            return []
        return self._inputs.get(key, [])

    def input_changed(self, output: Path, fingerprint: dict | None) -> bool:
        """Whether ``output`` was logged as made from input files whose :func:`files_fingerprint` was not
        ``fingerprint`` (the input's now): the input was changed under its name since. ``False`` when the log
        does not say what it was made from, or ``fingerprint`` is ``None`` (no file, or one that cannot be
        read: its read names the problem)."""
        logged = self._made_from_inputs(output) if fingerprint is not None else []
        return bool(logged) and all(fingerprint != made for made, _ in logged)

    def other_input(self, output: Path, path: Path | None, fingerprint: dict | None) -> str | None:
        """The path of the input ``output`` was made from when that is another input than the one at ``path``
        now: another path and other content (``flight2/IMG_1.png`` into the folder of ``flight1/IMG_1.png``'s
        output). ``None`` for the same input, changed or not, or a copy of it elsewhere (same content), and
        when the log does not say."""
        logged = self._made_from_inputs(output) if fingerprint is not None and path is not None else []
        if not logged or any(fingerprint == made for made, _ in logged):
            return None
        paths = {made_path for _, made_path in logged}
        return None if None in paths or os.path.realpath(path) in paths else sorted(paths)[-1]

    def foreign_files(self, folder: Path) -> list[str] | None:
        """The names of the files in the frame folder ``folder`` that are not as this tool last wrote them there
        (added or edited since), sorted; ``None`` when the log has no line for the folder (not written here, or
        by an earlier version)."""
        if os.path.realpath(folder.parent) != self._real:
            return None
        self._read()
        logged = self._folders.get(folder.name)
        if logged is None:
            return None
        foreign = []
        for path in sorted(folder.iterdir()):
            try:
                size, digest = logged.get(path.name, (-1, ""))
                if not path.is_file() or path.stat().st_size != size or file_digest(path) != digest:
                    foreign.append(path.name)
            except OSError:
                foreign.append(path.name)
        return foreign
