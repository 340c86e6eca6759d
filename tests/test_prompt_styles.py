"""Prompt styles (webui/prompt_styles.py): A1111's merge rules, its styles.csv read and written, and the
A1111 API's /prompt-styles and `styles` on a tiny checkpoint."""
import json

import pytest
from inkwash.nodes.folders import Folders
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_text
from inkwash.webui import prompt_styles
from inkwash.webui.prompt_styles import PromptStyle, StylesError, apply_styles, merge_prompt
from test_a1111_api import SMALL, client, ctx  # noqa: F401  (fixtures)


def test_a_placeholder_takes_the_prompt_and_other_texts_are_appended():
    assert merge_prompt("masterpiece, {prompt}, ink wash", "a cat") == "masterpiece, a cat, ink wash"
    assert merge_prompt("ink wash ", " a cat ") == "a cat, ink wash"
    assert merge_prompt("ink wash", "") == "ink wash"
    assert merge_prompt("", "a cat") == "a cat"
    styles = [PromptStyle("frame", "{prompt} in a frame", "blurry"), PromptStyle("ink", "ink wash", "{prompt}, text")]
    assert apply_styles("a cat", "lowres", styles) == ("a cat in a frame, ink wash", "lowres, blurry, text")


def test_styles_round_trip_through_the_csv_with_commas_quotes_and_newlines(tmp_path):
    path = tmp_path / "data" / "styles.csv"
    tricky = PromptStyle('Say "hi", twice', 'a "quoted", {prompt}\nsecond line', "bad, ugly")
    plain = PromptStyle("plain", "ink wash")
    prompt_styles.save_style(path, tricky)
    prompt_styles.save_style(path, plain)
    assert prompt_styles.read_styles(path) == {tricky.name: tricky, "plain": plain}
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")  # as A1111 writes it
    assert b'"Say ""hi"", twice"' in raw and b"plain,ink wash,\r\n" in raw
    assert not [p for p in path.parent.iterdir() if p.name != "styles.csv"]  # no temporary file left


def test_a_style_of_the_same_name_is_replaced_only_when_asked(tmp_path):
    path = tmp_path / "styles.csv"
    prompt_styles.save_style(path, PromptStyle("ink", "ink wash"))
    with pytest.raises(StylesError, match="'ink' already exists"):
        prompt_styles.save_style(path, PromptStyle("ink", "charcoal"))
    assert prompt_styles.read_styles(path)["ink"].prompt == "ink wash"
    prompt_styles.save_style(path, PromptStyle("ink", "charcoal"), replace=True)
    assert prompt_styles.read_styles(path) == {"ink": PromptStyle("ink", "charcoal")}
    with pytest.raises(StylesError, match="give the style a name"):
        prompt_styles.save_style(path, PromptStyle("  ", "x"))


def test_a1111s_files_are_read_including_the_old_two_column_one(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text('name, prompt, negative_prompt\nink, "ink wash, {prompt}", blurry\n\n', encoding="utf-8")
    assert prompt_styles.read_styles(path) == {"ink": PromptStyle("ink", "ink wash, {prompt}", "blurry")}
    path.write_text("name,text\nold,sepia\n", encoding="utf-8")
    assert prompt_styles.read_styles(path) == {"old": PromptStyle("old", "sepia", "")}
    assert prompt_styles.read_styles(tmp_path / "missing.csv") == {}


@pytest.mark.parametrize("content, message", [
    ("title,text2\nink,wash\n", "first line must name the columns"),
    ("name,prompt,negative_prompt\nink,ink wash,blurry,extra\n", "line 2: more fields than the 3 columns"),
    (b"name,prompt\nink,\xff\xfe\n", "can't be read as UTF-8"),
])
def test_a_malformed_file_is_a_clear_error_naming_it(tmp_path, content, message):
    path = tmp_path / "styles.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StylesError, match=message) as error:
        prompt_styles.read_styles(path)
    assert str(path) in str(error.value)


def test_the_servers_file_comes_first_then_an_a1111_installs(tmp_path):
    install = tmp_path / "stable-diffusion-webui"
    prompt_styles.write_styles(install / "styles.csv", [PromptStyle("ink", "from a1111"), PromptStyle("sepia", "sepia")])
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"a111:\n  base_path: {install}\n  checkpoints: models/Stable-diffusion\n")
    folders = Folders(models_dir=tmp_path / "models")
    folders.load_extra_model_paths(yaml_file)
    library = prompt_styles.library(tmp_path / "data", folders.install_dirs)
    library.save(PromptStyle("ink", "ours"))
    assert library.styles() == {"ink": PromptStyle("ink", "ours"), "sepia": PromptStyle("sepia", "sepia")}
    assert library.apply("a cat", "", ["sepia", "nope", "ink"]) == ("a cat, sepia, ours", "", ["nope"])
    assert prompt_styles.read_styles(install / "styles.csv")["ink"].prompt == "from a1111"  # left alone


def test_the_api_lists_styles_and_applies_them_as_a1111_reports_them(client, ctx):
    styles = [PromptStyle("frame", "{prompt} in a frame", "blurry"), PromptStyle("ink", "ink wash, monochrome")]
    prompt_styles.write_styles(ctx.data_dir / "styles.csv", styles)
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "frame", "prompt": "{prompt} in a frame", "negative_prompt": "blurry"},
        {"name": "ink", "prompt": "ink wash, monochrome", "negative_prompt": ""}]
    body = {**SMALL, "negative_prompt": "lowres", "styles": ["frame", "Cinematic", "ink"], "save_images": True}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    styled = "a red circle in a frame, ink wash, monochrome"
    assert info["prompt"] == styled and info["all_prompts"] == [styled]
    assert info["negative_prompt"] == "lowres, blurry" and info["styles"] == ["frame", "Cinematic", "ink"]
    assert info["warnings"] == ["styles: no style named 'Cinematic'; ignored"]
    saved = sorted(ctx.folders.output_dir.rglob("*.png"))
    assert len(saved) == 1
    infotext = read_png_text(saved[0].read_bytes())["parameters"]
    assert infotext == info["infotexts"][0]
    parsed = parse_infotext(infotext)
    assert parsed["Prompt"] == styled and parsed["Negative prompt"] == "lowres, blurry"


def test_a_malformed_styles_file_is_a_clear_api_error(client, ctx):
    (ctx.data_dir / "styles.csv").write_text("title\nx\n")
    response = client.get("/sdapi/v1/prompt-styles")
    assert response.status_code == 500 and "styles.csv" in response.json()["detail"]
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "styles": ["x"]})
    assert response.status_code == 422 and response.json()["field"] == "styles"
    assert "first line must name the columns" in response.json()["detail"]
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200  # no styles asked: generates
