"""``difiisr-dwt export``: write, check and upload Hub releases.

Export PIPELINE_DIR (a DifIISRDWTPipeline folder, e.g. training's OUTPUT_DIR/pipeline) to --out as a Hub
release: model_index.json in diffusers' remote-code form, safetensors weights, the code files (this
package's model modules) and a model card (README.md). The release is written to a temporary folder and
renamed into place. --check compares release folders' code files with the package's modules; --push
uploads the release (--out, or PIPELINE_DIR itself when it already is a release); --dry-run lists what
--push would upload, offline.

    difiisr-dwt export PIPELINE_DIR --out HUB_DIR [--eval-json LABEL=FILE ...] [--card-meta META.json] [--variant fp16]
    difiisr-dwt export --check HUB_DIR [HUB_DIR ...]
    difiisr-dwt export HUB_DIR --push --repo-id ORG/NAME [--private] [--dry-run]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from difiisr_dwt.errors import PartialFailure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``difiisr-dwt export`` (the parser itself comes from :mod:`difiisr_dwt.cli`)."""
    parser.add_argument("source", nargs="?", metavar="PIPELINE_DIR", help="pipeline folder to export (or push)")
    parser.add_argument("--out", type=Path, default=None, metavar="HUB_DIR", help="release folder to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing release at --out: its weights, configs, code files and model card "
                        "(rewritten from this command's metadata); other files in it are kept")
    parser.add_argument("--variant", choices=["fp16"], default=None,
                        help="also write fp16 weights (*.fp16.safetensors), loaded with variant='fp16'")
    card = parser.add_argument_group("model card")
    card.add_argument("--card-meta", type=Path, default=None, metavar="META.json",
                      help="release metadata: a JSON object with the fields of difiisr_dwt.model_card.ReleaseInfo "
                      "(model_id, title, summary, datasets, tags, base_model, code_url, training_data, "
                      "train_commands, steps_note, cpu_time, eval_note, limitations, extra, eval)")
    card.add_argument("--eval-json", action="append", default=[], metavar="[LABEL=]FILE",
                      help="an `eval --json` file for the metrics table, repeatable (e.g. 'RoadScene val=val.json'); "
                      "several comma-separated files make one table (a baseline's `eval --sr` run beside the model's)")
    card.add_argument("--train-command", action="append", default=[], metavar="CMD",
                      help="a command that trained the model, repeatable, shown verbatim")
    card.add_argument("--steps-note", default=None, help="training steps / wall time note")
    card.add_argument("--cpu-time", default=None, help="measured inference time, e.g. '7.1 s per 160x128 LR on 2 CPU'")
    card.add_argument("--card-extra", type=Path, default=None, metavar="EXTRA.md",
                      help="a markdown section added to the card as it is")
    card.add_argument("--model-id", default=None,
                      help="what the card's snippets load (default: --repo-id, else the --out path as given)")
    hub = parser.add_argument_group("checking and uploading")
    hub.add_argument("--check", nargs="+", type=Path, default=None, metavar="HUB_DIR",
                     help="check release folders' code files against the installed package's modules; exit 1 on drift")
    hub.add_argument("--push", action="store_true", help="upload the release with huggingface_hub")
    hub.add_argument("--repo-id", default=None, help="Hub model repo to upload to (ORG/NAME)")
    hub.add_argument("--private", action="store_true", help="create the repo as private")
    hub.add_argument("--commit-message", default="Upload DifIISR-DWT pipeline")
    hub.add_argument("--dry-run", action="store_true", help="list what --push would upload; no network")


def run(args: argparse.Namespace) -> int:
    """Export, check or push; bad options or folders raise (exit 2), drift found by ``--check`` exits 1."""
    if args.check is not None:
        if args.source or args.out or args.push:
            raise UsageError("--check takes only release folders; run it on its own")
        return _check(args.check)
    return _export_and_push(args)


def _check(folders: list[Path]) -> int:
    from difiisr_dwt.release import check_release

    failed = 0
    for folder in folders:
        problems = check_release(folder)
        if problems:
            failed += 1
            print(f"DRIFT {folder}:", *problems, sep="\n  ")
        else:
            print(f"OK    {folder}: code files equal the package's modules")
    if failed:
        raise PartialFailure(f"{failed} of {len(folders)} release folder(s) differ from the sources (listed above)")
    return 0


def _release_info(args: argparse.Namespace):
    from difiisr_dwt.model_card import ModelCardError, ReleaseInfo, load_eval_json

    info = ReleaseInfo.from_json(args.card_meta) if args.card_meta else ReleaseInfo()
    info.train_commands += args.train_command
    for field in ("steps_note", "cpu_time", "model_id"):
        if getattr(args, field) is not None:
            setattr(info, field, getattr(args, field))
    info.model_id = info.model_id or args.repo_id or (str(args.out) if args.out else None)
    if args.card_extra:
        if not args.card_extra.is_file():
            raise ModelCardError(f"--card-extra {args.card_extra}: no such file")
        info.extra = args.card_extra.read_text(encoding="utf-8")
    sources = dict(info.eval)
    for item in args.eval_json:
        label, sep, file = item.partition("=")
        label, file = (label, file) if sep else (Path(item).stem, item)
        sources[label] = file.split(",") if "," in file else file
    return info, {label: load_eval_json(file) for label, file in sources.items()}


def _file_ids(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (device, inode)}`` of the files under ``folder`` (empty when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): (p.stat().st_dev, p.stat().st_ino) for p in folder.rglob("*")
            if p.is_file()}


def _export_and_push(args: argparse.Namespace) -> int:
    from difiisr_dwt.release import ReleaseError, check_release, export_release, push_release, upload_files

    if not args.source:
        raise ReleaseError("give a PIPELINE_DIR to export (with --out) or to push, or --check HUB_DIR")
    if args.push and not args.repo_id and not args.dry_run:
        raise ReleaseError("--push needs --repo-id ORG/NAME")
    if args.out is None and not (args.push or args.dry_run):
        raise ReleaseError("nothing to do: give --out HUB_DIR to export, --push to upload, or --dry-run")
    release = Path(args.source)
    if args.out is not None:
        info, evaluations = _release_info(args)
        before = _file_ids(args.out)
        release = export_release(args.source, args.out, info, evaluations, variant=args.variant,
                                 overwrite=args.overwrite)
        after = _file_ids(release)
        kept = sorted(relative for relative, ident in before.items() if after.get(relative) == ident)
        files = [release / relative for relative in after if relative not in kept]
        print(f"Wrote {release} ({len(files)} files, {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB)")
        if "README.md" in before:
            print(f"  replaced the model card {release / 'README.md'} (from this command's metadata)")
        if kept:
            print(f"  kept {len(kept)} file(s) export does not write: {', '.join(kept[:5])}"
                  + (", ..." if len(kept) > 5 else ""))
    else:
        problems = check_release(release)
        if problems:
            raise ReleaseError(f"{release} is not a release of the current sources (export it first):\n  "
                               + "\n  ".join(problems))
    if args.dry_run or args.push:
        files = upload_files(release)
        target = args.repo_id or "(no --repo-id)"
        verb = "Would upload" if args.dry_run else "Uploading"
        print(f"{verb} {len(files)} files ({sum(size for _, size in files) / 2**20:.1f} MiB) to {target}:")
        for relative, size in files:
            print(f"  {relative}  ({size:,} bytes)")
        if args.push and not args.dry_run:
            print(push_release(release, args.repo_id, private=args.private, commit_message=args.commit_message))
    return 0
