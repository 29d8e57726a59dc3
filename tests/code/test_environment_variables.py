"""docs/configuration.md's table of environment variables is every variable the serving code
reads, each with the parts that read it: read from the sources (shell ${VAR}, Python
os.environ / environ.get, Java System.getenv with its constants resolved, log4j2 ${env:VAR})."""

from __future__ import annotations

import re

from model.config import ROOT

PAGE = ROOT / "docs" / "configuration.md"
PARTS = {
    "entrypoint": [ROOT / "docker" / "entrypoint.sh"],
    "healthcheck": [ROOT / "docker" / "healthcheck.py"],
    "gateway": [ROOT / "docker" / "management_gateway.py"],
    "handler": sorted((ROOT / "handler").glob("*.py")),
    "plugins": sorted((ROOT / "handler" / "frontend").glob("*.java")),
    "logging": sorted((ROOT / "docker").glob("log4j2*.xml")),
}
NAME = r"[A-Z][A-Z0-9_]*"
JAVA_CONSTANT = re.compile(r'static final String (\w+) = "([^"]*)";')


def shell_variables(text: str) -> set[str]:
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(rf"\$\{{({NAME})", code)) | set(re.findall(rf"\$({NAME})\b", code))


def python_variables(text: str) -> set[str]:
    found = set()
    for line in text.splitlines():
        if re.search(r"\benviron\b|getenv", line) and not line.lstrip().startswith("#"):
            found |= set(re.findall(rf'"({NAME})"', line))
    return found


def java_variables(text: str) -> set[str]:
    constants = dict(JAVA_CONSTANT.findall(text))
    found = set()
    for argument in re.findall(r"System\.getenv\(([^;]*)\);", text):
        argument = argument[:-1] if argument.count(")") > argument.count("(") else argument
        value = ""
        for part in argument.split("+"):
            part = part.strip()
            literal = re.fullmatch(r'"([^"]*)"', part)
            constant = re.fullmatch(r"(\w+)(\.toUpperCase\([^)]*\))?", part)
            if literal:
                value += literal.group(1)
            elif constant and constant.group(1) in constants:
                text_value = constants[constant.group(1)]
                value += text_value.upper() if constant.group(2) else text_value
            else:
                raise AssertionError(f"cannot read the variable name of System.getenv({argument})")
        found.add(value)
    return found


def log4j_variables(text: str) -> set[str]:
    return set(re.findall(rf"\$\{{env:({NAME})", text))


def read_by() -> dict[str, set[str]]:
    """variable -> the parts of the serving code that read it."""
    readers: dict[str, set[str]] = {}
    for part, files in PARTS.items():
        for path in files:
            text = path.read_text()
            variables = {
                ".sh": shell_variables,
                ".py": python_variables,
                ".java": java_variables,
                ".xml": log4j_variables,
            }[path.suffix](text)
            for variable in variables:
                readers.setdefault(variable, set()).add(part)
    return readers


def documented() -> dict[str, set[str]]:
    section = PAGE.read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            for variable in re.findall(rf"`({NAME})`", cells[0]):
                rows[variable] = {part.strip() for part in cells[1].split(",")}
    return rows


def test_the_table_lists_every_variable_the_serving_code_reads_and_who_reads_it():
    assert documented() == read_by()


def test_the_scan_sees_each_kind_of_source():
    readers = read_by()
    assert readers["TS_DRAIN_SECONDS"] == {"entrypoint"}
    assert readers["TMPDIR"] == {"entrypoint", "healthcheck"}
    assert readers["TS_ADAPTIVE_BATCHING"] == {"plugins"}  # "TS_" + a constant, upper-cased
    assert readers["TS_OIP_ADDRESS"] == {"plugins"}  # through a constant
    assert readers["TS_LOG_LEVEL"] == {"logging"}
    assert java_variables('static final String K = "x_y";\nString v = System.getenv("TS_" + K.toUpperCase(L));') == {
        "TS_X_Y"
    }
