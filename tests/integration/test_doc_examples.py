"""Every request example in README.md, docs/api.md and docs/operations.md (the metrics and the
runbook's checks) runs against a real TorchServe (with the v2 plugin), and the answer shown under
it is the answer the server gives.

An example is a `curl` command in a ```bash block (its continuation lines and quoted bodies
included), or a whole ```python block. The answer shown is the `# ` comment lines right under the
command, with no blank line between; `...` stands for any text (numbers and ids that vary).
The documented ports become the test server's: 8080 inference, 8081 management, 8082 metrics,
8083 the Open Inference Protocol v2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.torchserve import torchserve
from model.config import ROOT

PAGES = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "operations.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
PORT = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):(8080|8081|8082|8083)")
ELIDED = "..."


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    command: str
    shown: str  # the answer shown under it ("" where the page shows none)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def examples(page: Path) -> list[Example]:
    text = page.read_text()
    found = []
    for fence in FENCE.finditer(text):
        language, body = fence.group(1), fence.group(2)
        first = text.count("\n", 0, fence.start(2)) + 1
        name = str(page.relative_to(ROOT))
        if language == "python":
            found.append(Example(name, first, language, body, ""))
        elif language == "bash":
            found.extend(
                Example(name, first + offset, language, command, shown)
                for offset, command, shown in curl_commands(body)
            )
    return found


def curl_commands(block: str) -> list[tuple[int, str, str]]:
    """(line offset, command, answer shown) for each curl command of a bash block."""
    lines, found, index = block.splitlines(), [], 0
    while index < len(lines):
        if not lines[index].lstrip().startswith("curl "):
            index += 1
            continue
        start, command = index, [lines[index]]
        # a command goes on after a trailing backslash or while a quoted body is open
        while (command[-1].rstrip().endswith("\\") or "\n".join(command).count("'") % 2) and index + 1 < len(lines):
            index += 1
            command.append(lines[index])
        index += 1
        shown = []
        while index < len(lines) and lines[index].startswith("#"):
            shown.append(lines[index][1:].strip())
            index += 1
        found.append((start, "\n".join(command), " ".join(shown)))
    return found


def matches(shown: str, answer: str) -> bool:
    """The answer shown (JSON or text, `...` for any text) against the real one, whitespace aside."""
    try:  # JSON answers compared in one compact form, whatever their spacing
        answer = json.dumps(json.loads(answer), separators=(",", ":"))
    except ValueError:
        answer = answer.strip()
    pattern = ".*?".join(r"\s*".join(re.escape(word) for word in part.split()) for part in shown.split(ELIDED))
    return re.fullmatch(r"\s*" + pattern + r"\s*", answer, re.S) is not None


ALL = [example for page in PAGES for example in examples(page)]


def test_the_pages_hold_the_examples_this_test_runs():
    """The parser sees every curl command of the pages (none is missed by a layout it cannot read)."""
    for page in PAGES:
        blocks = [body for language, body in FENCE.findall(page.read_text()) if language == "bash"]
        curls = sum(len(re.findall(r"^\s*curl ", body, re.M)) for body in blocks)
        assert curls == len([e for e in ALL if e.page == str(page.relative_to(ROOT)) and e.language == "bash"])
    assert len([e for e in ALL if e.shown]) >= 10
    print(f"{len(ALL)} examples, {len([e for e in ALL if e.shown])} with the answer shown")


def test_matching_elides_only_what_the_dots_stand_for():
    assert matches('{"p": ..., "v": "1.0-..."}', '{"p":0.25,"v":"1.0-abc"}')
    assert not matches('{"p": ..., "v": "2.0-..."}', '{"p":0.25,"v":"1.0-abc"}')
    assert not matches('{"code": 400}', '{"code":400,"type":"invalid_request"}')
    assert matches("200", "200\n")


@pytest.fixture(scope="module")
def documented(archive, plugins, tmp_path_factory):
    """A server of its own (the examples scale its workers) that has answered a prediction: the
    runbook reads counters, which TorchServe serves from the first request they count on."""
    with torchserve(archive.parent, tmp_path_factory.mktemp("doc-examples"), plugins=plugins) as server:
        requests.post(
            f"{server.inference_url}/predictions/mymodel",
            data=(ROOT / "sample_input.json").read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        ).raise_for_status()
        yield server


def local(command: str, server) -> str:
    urls = {
        "8080": server.inference_url,
        "8081": server.management_url,
        "8082": server.metrics_url,
        "8083": server.oip_url,
    }
    return PORT.sub(lambda match: urls[match.group(1)], command)


@pytest.mark.parametrize("example", ALL, ids=[example.name for example in ALL])
def test_the_example_gets_the_answer_shown(example: Example, documented, tmp_path):
    if example.language == "python":
        script = tmp_path / "example.py"
        script.write_text(local(example.command, documented).replace("http://", ""))
        run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    else:
        run = subprocess.run(
            ["bash", "-c", local(example.command, documented)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), f"{example.name}: no answer"
    if example.shown:
        assert matches(example.shown, run.stdout), (
            f"{example.name} shows\n{example.shown}\nthe server answers\n{run.stdout[:2000]}"
        )
    else:  # no answer shown: at least not an error
        assert not re.search(r"\"code\":\s*[45][0-9][0-9]", run.stdout), run.stdout[:500]
