"""The python snippets of README.md's "Using the losses in your project" section run as they are.

They run in order, in one namespace, in a fresh interpreter whose folder holds copies of the
code/utils/ files (as a user who copied them into a project has them)."""
from __future__ import annotations
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
UTILS = os.path.join(ROOT, "code", "utils")
SECTION = "## Using the losses in your project"

#: runs the snippets of snippets.json one after another; a failure names the snippet
DRIVER = """\
import json
namespace = {"__name__": "__readme__"}
for i, code in enumerate(json.load(open("snippets.json"))):
    exec(compile(code, f"<README snippet {i + 1}>", "exec"), namespace)
print("ran", i + 1)
"""


def section_snippets(text: str, heading: str = SECTION) -> list:
    """The ```python blocks between ``heading`` and the next ``## `` heading."""
    start = text.find(heading + "\n")
    if start < 0:
        raise AssertionError(f"README.md has no section {heading!r}")
    body = text[start + len(heading):]
    following = re.search(r"^## ", body, flags=re.MULTILINE)
    body = body[:following.start()] if following else body
    return re.findall(r"^```python\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)


def run_snippets(snippets: list, folder) -> subprocess.CompletedProcess:
    for name in os.listdir(UTILS):
        if name.endswith(".py") and name != "__init__.py":
            shutil.copy(os.path.join(UTILS, name), os.path.join(folder, name))
    with open(os.path.join(folder, "snippets.json"), "w") as f:
        json.dump(snippets, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", DRIVER], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=300)


def test_section_snippets_run(tmp_path):
    with open(README, encoding="utf-8") as f:
        snippets = section_snippets(f.read())
    assert snippets, f"README.md's {SECTION!r} has no python snippet"
    out = run_snippets(snippets, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"ran {len(snippets)}"


def test_extraction_stops_at_the_section_and_a_broken_snippet_fails(tmp_path):
    text = ("## Other\n```python\nraise SystemExit(1)\n```\n" + SECTION + "\nprose\n```python\nx = 1\n```\n"
            "```bash\nls\n```\n```python\ny = x + 1\n```\n## Next\n```python\nz = 3\n```\n")
    assert section_snippets(text) == ["x = 1\n", "y = x + 1\n"]
    assert section_snippets(SECTION + "\nno code\n## Next\n") == []
    with pytest.raises(AssertionError, match="no section"):
        section_snippets("## Something else\n")
    out = run_snippets(["x = 1\n", "y = undefined_name\n"], tmp_path)
    assert out.returncode != 0 and "<README snippet 2>" in out.stderr
