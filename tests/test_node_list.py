"""The README's core node list is the one the registry gives."""
from inkwash.nodes import node_list
from inkwash.nodes.registry import core_nodes


def test_readme_node_list_is_up_to_date():
    readme = node_list.README.read_text(encoding="utf-8")
    assert node_list.render(readme) == readme, \
        "README.md's core node list is out of date: run python -m inkwash.nodes.node_list"


def test_the_list_names_every_registered_node_and_only_missing_comfyui_ones():
    registry = core_nodes()
    text = node_list.section(registry)
    have, missing = text.split("**ComfyUI core nodes Inkwash does not have**")
    listed = [name for line in have.splitlines() if line.startswith("- ")
              for name in line.split(": ", 1)[1].split(", ")]
    assert sorted(listed) == sorted(registry)
    listed_missing = missing.split("\n\n")[1].split(", ")
    assert set(listed_missing) == set(node_list.COMFYUI_CORE_NODES) - set(registry)
    assert "ControlNetApply" not in listed_missing and "ConditioningSetArea" in node_list.COMFYUI_CORE_NODES


def test_check_flags_a_stale_readme(tmp_path, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{node_list.START}\nold list\n{node_list.END}\nrest\n", encoding="utf-8")
    assert node_list.main(["--check", "--readme", str(stale)]) == 1
    assert node_list.main(["--readme", str(stale)]) == 0
    written = stale.read_text(encoding="utf-8")
    assert written.startswith("intro\n") and written.endswith("\nrest\n") and "old list" not in written
    assert node_list.main(["--check", "--readme", str(stale)]) == 0
