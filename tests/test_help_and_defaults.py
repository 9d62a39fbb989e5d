"""``--help`` is plain text that ends in full sentences, and the defaults the README, the model card and
``--help`` state are the pipeline's own (its ``__call__`` signature and class attributes: one source)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from difiisr_dwt.cli import COMMANDS, build_parser, plain_text
from difiisr_dwt.loading import pipeline_call_defaults, pipeline_class

REPO = Path(__file__).resolve().parent.parent
MARKUP = ("``", ":func:", ":class:", ":mod:", ":meth:", ":attr:", ":data:", "::\n")


def _help(command: str) -> str:
    """``difiisr-dwt COMMAND --help`` as printed (the subparser's own help)."""
    parser = build_parser(command)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command].format_help()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_is_plain_text_in_full_sentences(command):
    text = _help(command)
    assert not [m for m in MARKUP if m in text], text
    description = text.split("\n\n", 1)[1].split("\npositional arguments:")[0].split("\noptions:")[0]
    for paragraph in description.strip().split("\n\n"):
        if paragraph.startswith(" "):  # an example block
            continue
        assert paragraph.rstrip()[-1] in ".:!?", f"{command} --help: a paragraph breaks off: {paragraph!r}"


def test_plain_text_strips_roles_and_literals():
    assert plain_text("done by :func:`~difiisr_dwt.archive.run_archive` on ``x``.\nExamples::") == \
        "done by difiisr_dwt.archive.run_archive on x.\nExamples:"


def test_help_states_the_pipelines_defaults():
    defaults = pipeline_call_defaults()
    for command in ("upscale", "eval"):
        text = " ".join(_help(command).split())
        assert f"sampling steps, 1..T (default: the pipeline's, {defaults['num_inference_steps']})" in text
        assert f"(default {defaults['noise_scale']})" in text


def test_readme_and_model_card_state_the_pipelines_defaults():
    defaults, pipeline = pipeline_call_defaults(), pipeline_class()
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    stated_steps = re.findall(r"`num_inference_steps` in 1\.\.\d+ \(default (\d+)\)", readme)
    stated_steps += re.findall(r"\[--steps (\d+)\]", readme)
    stated_steps += re.findall(r"default call [—-]+ (\d+) deterministic steps", readme)
    assert len(stated_steps) >= 3 and set(stated_steps) == {str(defaults["num_inference_steps"])}, stated_steps
    flat = re.findall(r"at or below ~?([\d.]+) grey levels?", readme)
    assert flat and all(float(value) == pipeline.detail_noise_level for value in flat), flat
    rounds = re.findall(r"\((\d+) rounds of `SR \+=", readme)
    assert rounds == [str(pipeline.back_projection_iterations)]
    card = " ".join((REPO / "hub" / "difiisr-dwt-tiny" / "README.md").read_text(encoding="utf-8").split())
    assert re.findall(r"default call takes (\d+) deterministic steps", card) == [str(defaults["num_inference_steps"])]
