"""Artifacts whose bytes depend on their content only: not on the folder the project was checked
out in, the venv, the user, the clock or the zlib at hand.

Both served artifacts are zip files. `torch.jit.save` writes a random id into every model.pt
(`.data/serialization_id`) and, in its debug records (`*.debug_pkl`: the source ranges that
make a TorchScript error point at a line of Python), the absolute path of every source file it
compiled: this checkout's `model/training/network.py` and the venv's `torch/nn/...`.
torch-model-archiver stamps the build time into the .mar's MANIFEST.json and copies each file's
modification time into its entry. `stable_torchscript` and `stable_archive` rewrite such a zip
with the same records in the same order, where:

- debug paths are relative: `model/training/network.py`, `torch/nn/functional.py` (what a user
  needs to find the line; the source text itself stays in the records),
- class constants are declared in sorted order (TorchScript writes a module's `Final` constants
  in the iteration order of a set of names, which follows Python's hash seed),
- the serialization id is derived from the other records,
- every entry has the same time (1980-01-01, the zip epoch) and mode (0644), the manifest the
  same `createdOn`: an archive is named by its model version, not by when it was packed,
- every record is stored uncompressed, so no zlib version can change a byte, and starts on a
  64-byte boundary as torch.jit.save aligns them (tensors can be read in place).

Python 3.9 compatible: the serving image re-exports and packs with it.
"""

import hashlib
import json
import os
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MANIFEST = "MAR-INF/MANIFEST.json"
CREATED_ON = "01/01/1980 00:00:00"  # the format torch-model-archiver writes (%d/%m/%Y %H:%M:%S)
ALIGNMENT = 64
PADDING_HEADER = b"FB"  # the extra-field id torch.jit.save pads records with
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds model/


def source_roots() -> List[Tuple[str, str]]:
    """(absolute prefix, what it becomes) for the folders TorchScript compiles sources from:
    torch's own package (possibly inside the checkout, so first) and the checkout."""
    torch_dir = Path(torch.__file__).resolve().parent
    roots = [(str(torch_dir.parent) + os.sep, ""), (str(PACKAGE_ROOT) + os.sep, "")]
    # Where torch was imported from as written on sys.path (a venv reached through a symlink).
    written = Path(torch.__file__).parent
    if written != torch_dir:
        roots.insert(0, (str(written.parent) + os.sep, ""))
    return roots


def relative_paths(pickled: bytes, roots: List[Tuple[str, str]]) -> bytes:
    """The pickle with every string that starts with one of the roots' prefixes rewritten.
    Strings are rewritten in place as BINUNICODE ('X', a 4-byte length, UTF-8): nothing in a
    pickle points at byte offsets, so lengths may change."""
    out = bytearray()
    last = 0
    ops = list(pickletools.genops(pickled))
    for index, (opcode, argument, position) in enumerate(ops):
        if opcode.name not in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8") or not isinstance(argument, str):
            continue
        for prefix, replacement in roots:
            if argument.startswith(prefix):
                end = ops[index + 1][2]
                assert end is not None and position is not None  # genops over bytes knows every position
                text = (replacement + argument[len(prefix) :]).encode("utf-8")
                out += pickled[last:position] + b"X" + struct.pack("<I", len(text)) + text
                last = end
                break
    return bytes(out + pickled[last:])


CONSTANT = re.compile(rb"^ +\w+ : Final\[[^\n]*\] = [^\n]*$")


def sorted_constants(code: bytes) -> bytes:
    """Generated TorchScript code with each run of class-constant declarations sorted. They are
    declarations, so their order means nothing; the block keeps its length, so the offsets the
    debug records map into the code stay valid."""
    lines = code.split(b"\n")
    out: List[bytes] = []
    run: List[bytes] = []
    for line in lines + [b""]:
        if CONSTANT.match(line):
            run.append(line)
            continue
        out += sorted(run)
        run = []
        out.append(line)
    return b"\n".join(out[:-1])


def rewrite_zip(
    path: Path,
    transform: Callable[[str, bytes], bytes],
    derive: Optional[Callable[[Dict[str, bytes]], Dict[str, bytes]]] = None,
) -> None:
    """Rewrite the zip at `path` in place: each record's bytes through `transform(name, data)`,
    then `derive(records)` may replace some from all the others; the same names in the same
    order, stored, aligned, with one time and mode."""
    with zipfile.ZipFile(path) as archive:
        records = {info.filename: transform(info.filename, archive.read(info)) for info in archive.infolist()}
    if derive is not None:
        records.update(derive(records))
    temporary = Path(str(path) + ".stable")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            # The record's data starts after a 30-byte header, the name and this extra field.
            assert archive.fp is not None  # open for writing until the with block ends
            start = archive.fp.tell() + 30 + len(name.encode("utf-8")) + 4
            padding = (-start) % ALIGNMENT
            info.extra = PADDING_HEADER + struct.pack("<H", padding) + b"Z" * padding
            archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    with zipfile.ZipFile(temporary) as archive:
        if archive.testzip() is not None:
            raise RuntimeError(f"{temporary}: the rewritten archive does not check out")
    os.replace(temporary, path)


def content_id(records: Dict[str, bytes], stamp: str) -> bytes:
    """A serialization id as long as torch's (decimal digits), from every other record."""
    digest = hashlib.sha256()
    for name, data in records.items():
        if name != stamp:
            digest.update(name.encode() + hashlib.sha256(data).digest())
    return str(int(digest.hexdigest(), 16))[: len(records[stamp])].encode().ljust(len(records[stamp]), b"0")


def stable_torchscript(path: Path) -> None:
    """model.pt from torch.jit.save, made location-independent and reproducible (see above)."""
    roots = source_roots()

    def transform(name: str, data: bytes) -> bytes:
        if name.endswith(".debug_pkl"):
            return relative_paths(data, roots)
        return sorted_constants(data) if "/code/" in name and name.endswith(".py") else data

    def derive(records: Dict[str, bytes]) -> Dict[str, bytes]:
        stamps = [name for name in records if name.endswith(".data/serialization_id")]
        if len(stamps) != 1:
            raise RuntimeError(f"unexpected torch.jit.save format: {len(stamps)} serialization ids in {path}")
        return {stamps[0]: content_id(records, stamps[0])}

    rewrite_zip(Path(path), transform, derive)


def stable_archive(path: Path) -> None:
    """A .mar from torch-model-archiver with a fixed createdOn and fixed entry times."""

    def transform(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        manifest["createdOn"] = CREATED_ON
        return json.dumps(manifest, indent=2).encode() + b"\n"

    rewrite_zip(Path(path), transform)
