"""The README's tour is code: run it, so the README stays true to the library."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has a python tour"
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "readme"}
    for block in blocks:  # every python block of the README, in order, in one namespace
        exec(compile(block, str(README), "exec"), scope)
    out = capsys.readouterr().out
    assert "%2:f32[] = add %0 %1" in out
    assert "(array(2.), array(5.))" in out
    assert "['traced', 'backward', 'simplified', 'fused', 'scheduled', 'optimized']" in out
    assert (tmp_path / "out" / "loss_backward.svg").read_text().lstrip().startswith("<?xml")
    acc = float(out.split("test accuracy ")[1].split()[0])
    assert acc > 0.93, out
    assert (tmp_path / "out" / "train_step.fused.svg").exists()


def test_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
