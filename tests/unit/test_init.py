"""`bgtasks init`: the scaffold is a consistent bgtasks task, and nothing is overwritten without --force."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from bgtasks.cli import main
from bgtasks.cli.init_cmds import SCAFFOLD, render_scaffold, write_scaffold
from bgtasks import stored


def test_the_scaffold_prefect_yaml_deploys_a_consistent_task_from_its_directory(tmp_path: Path) -> None:
    project = tmp_path / 'my "odd" project: #1'  # quotes, colon, hash: still one YAML string
    files = render_scaffold(project, "background-tasks")
    doc = yaml.safe_load(files["prefect.yaml"])
    [step] = doc["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(project)
    assert doc["name"] == project.name
    [dep] = doc["deployments"]
    opts = stored.read(dep["parameters"])
    assert opts is not None and opts.name == dep["name"] == "hello"
    assert dep["tags"] == stored.tags_for(opts, opts.handler)
    assert dep["work_pool"] == {"name": "background-tasks", "work_queue_name": opts.priority.value}
    assert dep["entrypoint"] == "handlers.py:hello"
    assert not dep.get("schedules")


def test_the_scaffold_handler_is_the_flow_the_entrypoint_names(tmp_path: Path) -> None:
    source = render_scaffold(tmp_path, "background-tasks")["handlers.py"]
    tree = ast.parse(source)
    [fn] = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert fn.name == "hello"
    [decorator] = fn.decorator_list
    assert isinstance(decorator, ast.Call) and ast.literal_eval(decorator.args[0]) == "hello"


def test_write_refuses_existing_files_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "handlers.py").write_text("mine")
    with pytest.raises(FileExistsError, match="handlers.py"):
        write_scaffold(tmp_path, "background-tasks")
    assert (tmp_path / "handlers.py").read_text() == "mine"
    assert not (tmp_path / "prefect.yaml").exists()

    written = write_scaffold(tmp_path, "background-tasks", force=True)
    assert sorted(p.name for p in written) == sorted(SCAFFOLD)
    assert "background_handler" in (tmp_path / "handlers.py").read_text()


def test_cli_init_says_what_it_wrote_and_fails_in_one_line_on_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new" / "project"
    assert main(["init", str(target)]) == 0
    out = capsys.readouterr().out
    for name in SCAFFOLD:
        assert f"Wrote {target / name}" in out
    assert "prefect --no-prompt deploy --all" in out

    assert main(["init", str(target)]) == 1
    err = capsys.readouterr().err
    assert "--force" in err and "Not overwriting" in err

    assert main(["init", str(target), "--force"]) == 0
