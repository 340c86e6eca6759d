"""The generation tabs' Styles controls, called as the browser's events would: styles applied at
Generate (the infotext reports the styled prompts), "Apply styles to prompt" and "Save style"."""
import gradio as gr
import pytest
from inkwash.nodes.formats.png_metadata import parse_infotext
from inkwash.webui import prompt_styles
from inkwash.webui.prompt_styles import PromptStyle
from inkwash.webui.tabs import build_ui
from inkwash.webui.tabs import styles as tab_styles
from test_tabs import Select, ctx, form, make_ctx, run_to_end  # noqa: F401  (fixtures)

STYLES = [PromptStyle("frame", "{prompt} in a frame", "blurry"), PromptStyle("ink", "ink wash", "{prompt}, text")]


@pytest.fixture
def styled(ctx):
    prompt_styles.write_styles(ctx.data_dir / "styles.csv", STYLES)
    return ctx


def test_selected_styles_are_applied_at_generate_and_an_unknown_one_is_a_warning(styled):
    with pytest.warns(UserWarning) as warned:  # gr.Warning outside a Gradio request
        last = run_to_end(styled, "txt2img", form(negative_prompt="lowres", styles=["frame", "gone", "ink"]))
    assert [str(w.message) for w in warned if w.category is UserWarning] == ["styles: no style named 'gone'; ignored"]
    info = parse_infotext(last.results["images"][0]["infotext"])
    assert info["Prompt"] == "a red circle in a frame, ink wash"
    assert info["Negative prompt"] == "lowres, blurry, text"


def test_a_malformed_styles_file_refuses_generate_naming_it(styled):
    (styled.data_dir / "styles.csv").write_text("title\nx\n")
    with pytest.raises(gr.Error, match="styles.csv"):
        run_to_end(styled, "txt2img", form(styles=["frame"]))
    assert tab_styles.style_names(styled) == []


def test_apply_styles_writes_the_prompts_and_clears_the_selection(styled):
    prompt, negative, selection, note = tab_styles.apply_to_prompt(styled, "a cat", "", ["ink", "frame", "gone"])
    # A1111's rule: the placeholder takes the prompt even when it is empty
    assert (prompt, negative) == ("a cat, ink wash in a frame", ", text, blurry")
    assert selection.value == [] and selection.choices == [("frame", "frame"), ("ink", "ink")]
    assert "'gone'" in note


def test_save_style_adds_the_current_prompts_and_replaces_only_when_asked(styled):
    dropdown, note = tab_styles.save_style(styled, " mine ", "sharp, {prompt}", "noise", False, ["ink"])
    assert note == "Saved style 'mine'."
    assert [name for name, _ in dropdown.choices] == ["frame", "ink", "mine"] and dropdown.value == ["ink"]
    assert prompt_styles.read_styles(styled.data_dir / "styles.csv")["mine"] == PromptStyle("mine", "sharp, {prompt}", "noise")
    dropdown, note = tab_styles.save_style(styled, "ink", "other", "", False, [])
    assert "already exists" in note and "Replace" in note
    assert prompt_styles.read_styles(styled.data_dir / "styles.csv")["ink"].prompt == "ink wash"
    tab_styles.save_style(styled, "ink", "other", "", True, [])
    assert prompt_styles.read_styles(styled.data_dir / "styles.csv")["ink"] == PromptStyle("ink", "other", "")
    _, note = tab_styles.save_style(styled, "", "x", "", False, [])
    assert "give the style a name" in note


def test_every_generation_tab_has_the_styles_controls(styled):
    blocks = build_ui(styled)
    dropdowns = [c for c in blocks.blocks.values() if isinstance(c, gr.Dropdown) and c.label == "Styles"]
    assert len(dropdowns) == 4 and all(d.multiselect for d in dropdowns)
    assert dropdowns[0].choices == [("frame", "frame"), ("ink", "ink")]
    buttons = [c.value for c in blocks.blocks.values() if isinstance(c, gr.Button)]
    assert buttons.count("Apply styles to prompt") == 4 and buttons.count("Save style") == 4
