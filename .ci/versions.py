"""Versions for CI: the declared lower bounds, and how an environment differs from constraints.txt.

    python .ci/versions.py lowest                 # `name==lower bound` for every ranged dependency (.ci/oldest)
    python .ci/versions.py diff VENV [FILE]        # VENV's versions against FILE (default constraints.txt), and the
                                                   # releases past each declared upper bound (outside the tested range)
    python .ci/versions.py freeze VENV [FILE]      # write VENV's exact versions to FILE (move the constraints forward)

A dependency is "ranged" when pyproject.toml gives it both a lower and an upper bound (transformers, gradio, captum,
ray) or pins it (torch, torchvision): those are the packages whose internals omni-lab touches.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(.*)$")


def declared() -> dict[str, str]:
    """name -> specifier for every requirement in pyproject.toml (main and extras), extras of omni-lab skipped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    specs = {}
    for requirement in requirements:
        name, spec = REQUIREMENT.match(requirement).groups()
        if name != "omni-lab":
            specs[normalise(name)] = spec.replace(" ", "")
    return specs


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bounds(spec: str) -> tuple[str | None, str | None]:
    """(lower, upper) of a specifier such as `>=5.24,<5.26` or `==2.14.1`."""
    lower = upper = None
    for clause in spec.split(","):
        if clause.startswith("=="):
            lower = upper = clause[2:]
        elif clause.startswith(">="):
            lower = clause[2:]
        elif clause.startswith("<"):
            upper = clause.lstrip("<=")
    return lower, upper


def ranged() -> dict[str, tuple[str, str]]:
    return {name: bounds(spec) for name, spec in declared().items() if all(bounds(spec))}


def installed(venv: Path) -> dict[str, str]:
    output = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {normalise(row["name"]): row["version"] for row in json.loads(output)}


def pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[normalise(name.strip())] = version.strip()
    return pins


def newer_than_range(name: str, upper: str) -> list[str]:
    """Releases on the index at or past the declared upper bound (pip's own listing)."""
    output = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name], capture_output=True, text=True
    ).stdout
    match = re.search(r"Available versions: (.*)", output)
    if not match:
        return []
    upper_key = version_key(upper)
    return [v for v in match.group(1).split(", ") if version_key(v) >= upper_key]


def version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.+]", version)[:4])


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "lowest":
        for name, (lower, _) in sorted(ranged().items()):
            print(f"{name}=={lower}")
        return 0
    if command == "diff" and len(argv) >= 2:
        have = installed(Path(argv[1]))
        pins = pinned(Path(argv[2]) if len(argv) > 2 else ROOT / "constraints.txt")
        changed = {
            name: (pins[name], version) for name, version in have.items() if name in pins and pins[name] != version
        }
        added = sorted(set(have) - set(pins) - {"pip"})
        print(f"versions that differ from the constraints ({len(changed)}):")
        for name, (old, new) in sorted(changed.items()):
            mark = " *" if name in ranged() else ""
            print(f"  {name}: {old} -> {new}{mark}")
        if added:
            print("installed but not in the constraints:", ", ".join(added))
        print("releases outside the tested ranges (raise the upper bound once the suite passes there):")
        for name, (_, upper) in sorted(ranged().items()):
            past = newer_than_range(name, upper)
            if past and bounds(declared()[name])[0] != upper:
                print(f"  {name} (<{upper}): {', '.join(past)}")
        return 0
    if command == "freeze" and len(argv) >= 2:
        target = Path(argv[2]) if len(argv) > 2 else ROOT / "constraints.txt"
        header = (
            "# Exact versions the whole suite passed with (`.ci/run` installs with `-c constraints.txt`).\n"
            "# Regenerate with `python .ci/versions.py freeze VENV` after `.ci/newest` passes.\n"
        )
        lines = [f"{name}=={version}" for name, version in sorted(installed(Path(argv[1])).items()) if name != "pip"]
        target.write_text(header + "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} pins to {target}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
