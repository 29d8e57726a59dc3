"""The docs keep their promises: a short README with the two commands and the results written by
the code, topic pages under docs/ whose links and `make` targets all exist, and every generated
block in the page its make target rewrites."""

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.bench import CAPACITY_MARKERS
from benchmarks.model_variants import MARKERS as MODEL_VARIANTS_MARKERS
from benchmarks.served_runtimes import MARKERS as SERVED_RUNTIMES_MARKERS
from benchmarks.served_variants import MARKERS as SERVED_VARIANTS_MARKERS
from loadtest.scenarios import DOC_MARKERS, IMAGE_DOC_MARKERS
from model.analysis.baselines import LABELS
from model.analysis.results import RESULTS_MARKERS, render_results
from model.base.markdown import block_markers
from model.config import ROOT

README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = (ROOT / "Makefile").read_text()
MAKE_TARGETS = set(re.findall(r"^([a-zA-Z_-]+):", MAKEFILE, re.M))
README_MAX_LINES = 260
# The generated blocks: the make target that rewrites each, the option that names its page, and the
# markers its writer uses.
BLOCKS = {
    "results": ("results", "--doc", RESULTS_MARKERS),
    "loadtest": ("loadtest", "--doc", DOC_MARKERS),
    "loadtest-image": ("loadtest-image", "--doc", IMAGE_DOC_MARKERS),
    "bench": ("bench", "--doc", block_markers("bench", "make bench")),
    "capacity": ("bench", "--capacity-doc", CAPACITY_MARKERS),
    "model-variants": ("model-bench", "--doc", MODEL_VARIANTS_MARKERS),
    "served-variants": ("served-model-bench", "--doc", SERVED_VARIANTS_MARKERS),
    "served-runtimes": ("served-runtime-bench", "--doc", SERVED_RUNTIMES_MARKERS),
}

FENCED = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# `make [VAR=value ...] target`: the target is the first word that is not an assignment or an option.
MAKE_CALL = re.compile(r"\bmake((?:\s+(?:[A-Za-z_]+=\S*|-\S+))*)\s+([a-z][\w-]*)\b(?!=)")


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code(text: str) -> str:
    """The fenced blocks and inline code spans of a Markdown page."""
    fenced = FENCED.findall(text)
    return "\n".join(fenced + INLINE_CODE.findall(FENCED.sub("", text)))


def prose(text: str) -> str:
    """A Markdown page without its code, where links live."""
    return INLINE_CODE.sub("", FENCED.sub("", text))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCED.sub("", page.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def recipe(target: str) -> str:
    """The command lines of a Makefile target."""
    lines = MAKEFILE.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}:", line))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line)
    return "\n".join(body)


def test_quick_start_is_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("## ", 1)[0]
    assert re.search(r"^make run\b", quick_start, re.M) and re.search(r"^make test\b", quick_start, re.M)


def test_readme_is_a_front_door():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_links_every_topic_page():
    linked = {match for match in LINK.findall(prose(README))}
    for page in PAGES[1:]:
        assert name(page) in linked, f"README.md does not link {name(page)}"


def test_results_block_has_the_layout_the_code_writes():
    block = README[README.index(RESULTS_MARKERS[0]) : README.index(RESULTS_MARKERS[1]) + len(RESULTS_MARKERS[1])]
    metric = {
        "roc_auc": 0.5,
        "pr_auc": 0.5,
        "brier": 0.2,
        "log_loss": 0.6,
        "accuracy": 0.7,
        "rows": 1,
        "positive_rate": 0.2,
    }
    rendered = render_results(
        {"model_version": "v", "train_seconds": 1, "epochs": 1},
        0.5,
        {"test": {"mlp": metric, "logistic_regression": metric}},
    )
    first_table = block.split("All baselines")[0]
    assert [line.split("|")[1] for line in first_table.splitlines() if line.startswith("| ")] == [
        line.split("|")[1] for line in rendered.splitlines() if line.startswith("| ")
    ]
    assert re.search(r"\| MLP \(served\) \| 0\.\d{3} \|", block)
    baselines = block.split("All baselines")[1].splitlines()
    assert [line.split("|")[1].strip() for line in baselines if line.startswith("| ")][2:] == list(LABELS.values())


@pytest.mark.parametrize("block", list(BLOCKS))
def test_each_generated_block_is_in_the_page_its_make_target_rewrites(block):
    target, option, (start, end) = BLOCKS[block]
    written = re.search(rf"{option} (\S+)", recipe(target))
    assert written, f"`make {target}` passes no {option} page"
    holding = [name(page) for page in PAGES if start in page.read_text() or end in page.read_text()]
    assert holding == [written.group(1)], (
        f"the {block} block is in {holding}, `make {target}` writes {written.group(1)}"
    )
    text = (ROOT / written.group(1)).read_text()
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {name(linked)}")
    assert not broken, f"{name(page)}: " + "; ".join(broken)


def test_the_link_check_sees_links_and_anchors():
    assert "docs/api.md" in LINK.findall(prose(README))
    assert "api.md#open-inference-protocol-v2-kserve--triton" in LINK.findall(
        prose((ROOT / "docs" / "docker-and-kubernetes.md").read_text())
    )
    assert "open-inference-protocol-v2-kserve--triton" in anchors(ROOT / "docs" / "api.md")


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_make_target_mentioned_is_in_the_makefile(page):
    mentioned = {match[1] for match in MAKE_CALL.findall(code(page.read_text()))}
    missing = sorted(mentioned - MAKE_TARGETS)
    assert not missing, f"{name(page)} mentions targets the Makefile lacks: {missing}"


def test_the_target_check_sees_the_documented_targets():
    mentioned = {match[1] for page in PAGES for match in MAKE_CALL.findall(code(page.read_text()))}
    assert {"run", "test", "promote", "update", "loadtest", "bench"} <= mentioned
    assert {"run", "test", "help", "loadtest-image", "image-test"} <= MAKE_TARGETS
    assert [
        m[1] for m in MAKE_CALL.findall("make promote VERSION=3\nmake VERSION=4 canary\n`make loadtest URL=x`")
    ] == ["promote", "canary", "loadtest"]


def test_make_help_lists_the_documented_targets():
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in (
        "setup",
        "run",
        "serve",
        "stop",
        "test",
        "lint",
        "archive",
        "train",
        "results",
        "image",
        "image-test",
        "loadtest-image",
        "container-tools",
    ):
        assert re.search(rf"\b{target}\b", listed), target
