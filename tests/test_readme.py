"""The README's tour snippet must run and show learning."""
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_snippet_runs_and_learns(capsys):
    text = README.read_text()
    marker = text.index("executed by `tests/test_readme.py`")
    code = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["after"] >= namespace["before"] + 0.3, (namespace["before"], namespace["after"])
    assert "held-out success rate" in capsys.readouterr().out
