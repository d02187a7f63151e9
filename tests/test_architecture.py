"""The shape of the house, checked: no module of `contacts/` over 450 lines, no domain that
reaches more than two other domains, and a map in docs/ARCHITECTURE.md that lists every
file of the package where it is."""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "contacts"
MAX_LINES = 450
MAX_NEIGHBOURS = 2


def test_no_module_is_over_450_lines():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}


def test_no_domain_reaches_more_than_two_other_domains():
    """Each import across domains is written down in the independence contract (which
    `make lint` enforces); no domain may have more than two others among its targets."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    independence, = [contract for contract in contracts["contracts"]
                     if contract["type"] == "independence"]
    domains = {module.split(".")[1] for module in independence["modules"]}
    reached = defaultdict(set)
    for line in independence["ignore_imports"]:
        source, target = (part.strip().split(".")[1] for part in line.split("->"))
        assert {source, target} <= domains and source != target, line
        reached[source].add(target)
    assert {domain: sorted(targets) for domain, targets in reached.items()
            if len(targets) > MAX_NEIGHBOURS} == {}
    assert reached, "the contract lists no cross-domain import: is this the right contract?"


def _map_block() -> str:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    return text.split("## The map", 1)[1].split("```", 2)[1]


def _mapped_files() -> set[str]:
    """Each Python file the map names, with its folder: `contacts/` and its sub-folders
    open a section by their indentation; a section's lines name its files."""
    found = set()
    folders: list[tuple[int, str]] = []  # (indentation, folder) from the outermost
    for line in _map_block().splitlines():
        entry = re.match(r"^( *)(\S+)", line)
        if entry is None:
            continue
        indent, name = len(entry.group(1)), entry.group(2)
        if indent < 27:  # a new entry (descriptions start at column 27)
            folders = [(level, folder) for level, folder in folders if level < indent]
            if name.endswith("/"):
                folders.append((indent, name))
        prefix = "".join(folder for _, folder in folders)
        if not prefix.startswith("contacts/"):
            continue
        words = line.split()
        if indent < 27:  # "folder/ files...", "file.py file.py  what they hold"
            names = words[1:] if name.endswith("/") else words
        elif re.fullmatch(r"(\w+\.py ?)+", line.strip()):
            names = words  # a wrapped line of file names
        else:
            names = []
        for file in names:
            if not re.fullmatch(r"\w+\.py", file):
                break  # the description starts
            found.add(prefix + file)
    return found


def test_the_map_lists_every_file_of_the_package_and_no_other():
    """Package markers (`__init__.py`, a docstring each) may be listed or not."""
    on_disk = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
               if path.name != "__init__.py"}
    mapped = {name for name in _mapped_files() if not name.endswith("/__init__.py")}
    assert {"missing from the map": sorted(on_disk - mapped),
            "not on disk": sorted(mapped - on_disk)} == {"missing from the map": [],
                                                          "not on disk": []}
