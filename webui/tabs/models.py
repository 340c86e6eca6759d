"""The Models panel: what is installed in each model folder (name, size, the family of a checkpoint read
off its safetensors header, A1111's short hash, with the background hashing's progress), downloads started
from a URL or a Hugging Face OWNER/REPO/FILE with their progress (webui/model_download_api.py runs them),
and deleting a file after a confirmation. The bundled demo models can't be deleted: the tabs' defaults and
examples use them."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import gradio as gr

from ...nodes.folders import UnsafePath, safe_path
from ...nodes.formats import file_hashes
from ..context import ServerContext
from ..model_download_api import DownloadRequest
from ..model_downloads import DownloadRefused
from .defaults import DEMO_PREFIX
from .running import refused

log = logging.getLogger(__name__)

LISTED_FOLDERS = ("checkpoints", "loras", "vae", "controlnet", "embeddings", "upscale_models", "vae_approx")
INSTALLED_HEADERS = ["Folder", "Name", "Size", "Family", "Hash"]
DOWNLOAD_HEADERS = ["Source", "Folder", "File", "Status", "Progress"]
PROGRESS_SECONDS = 1.0


# -- handlers (plain functions: the tests call them) --------------------------------------------------------

def installed(ctx: ServerContext) -> list[list[str]]:
    """One row per installed model: folder, name, size, family (checkpoints), A1111 short hash."""
    rows = []
    for kind in LISTED_FOLDERS:
        for name in ctx.folders.list(kind):
            try:
                path = ctx.folders.find(kind, name)
            except (FileNotFoundError, UnsafePath):
                continue  # removed since it was listed
            family = checkpoint_family(path) if kind == "checkpoints" else ""
            short = file_hashes.current().for_listing(path, file_hashes.HASHED_FOLDERS.get(kind, file_hashes.SHA256))
            rows.append([kind, name, human_size(_size(path)), family, short or ""])
    return rows


def checkpoint_family(path: Path) -> str:
    """sd1 / sd2 / sdxl / sdxl_refiner (and inpaint/depth) from a safetensors header, no weights read;
    "" for what can't be told without loading it (a pickle, a diffusers folder)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return ""
    from ...nodes.runtime.model_detect import UnknownModel, detect_family  # torch: only when listing
    from ...nodes.runtime.state_dict_files import CheckpointError, open_state_dict

    try:
        family = detect_family(open_state_dict(path))
    except (UnknownModel, CheckpointError, OSError) as exc:
        log.info("models panel: %s: family unknown (%s)", path.name, exc)
        return "unknown"
    return family.name if family.kind == "base" else f"{family.name} {family.kind}"


def hashing_status() -> str:
    """What the background hasher is doing, for the panel: the file it reads and the queue's totals;
    "" when it is idle."""
    progress = file_hashes.current().progress()
    if not progress["hashing"] and not progress["queued"]:
        return ""
    files = [f"{item['name']} ({human_size(item['done'])} of {human_size(item['total'])})"
             for item in progress["hashing"]]
    done, total = progress["bytes_done"], progress["bytes_total"]
    overall = f"{done * 100 // total}%" if total else "0%"
    return (f"Hashing {', '.join(files) or 'next file'}: {progress['files_done']} of {progress['files_total']} "
            f"files, {overall} of {human_size(total)}; a hash shows here once computed.")


def relisted(ctx: ServerContext) -> tuple[list[list[str]], str]:
    """The installed list again, new files queued for hashing."""
    file_hashes.current().enqueue_folders(ctx.folders)
    return installed(ctx), hashing_status()


def start_download(ctx: ServerContext, source: str, folder: str, sha256: str) -> str:
    """Start a download into `folder`; what the page says. Bad input is refused naming what is wrong."""
    if ctx.downloads is None:
        raise refused("Downloads are not available on this server")
    if not (source or "").strip():
        raise refused("Give a URL or a Hugging Face OWNER/REPO/FILE to download")
    request = DownloadRequest(source=source.strip(), folder=folder or None, sha256=(sha256 or "").strip() or None)
    try:
        started = ctx.downloads.start(request)
    except DownloadRefused as exc:
        raise refused(str(exc)) from None
    return f"Downloading {started['url']} into {folder}"


def download_rows(ctx: ServerContext) -> list[list[str]]:
    """The server's downloads, newest last: source, folder, file, status (or its error), progress."""
    rows = []
    for entry in ctx.downloads.list() if ctx.downloads else []:
        done, total = entry.get("downloaded") or 0, entry.get("total")
        progress = f"{done * 100 // total}% of {human_size(total)}" if total else human_size(done)
        status = f"failed: {entry['error']}" if entry.get("error") else entry["status"]
        rows.append([entry["url"], entry["folder"], entry.get("name") or "", status, progress])
    return rows


def deletable(ctx: ServerContext, folder: str, name: str) -> Path:
    """The file to delete, kept inside its folder; refuses the demo models and names not installed."""
    if folder not in LISTED_FOLDERS:
        raise refused(f"Pick a model to delete (folder {folder!r} is not one of {', '.join(LISTED_FOLDERS)})")
    if not name:
        raise refused("Pick a model to delete")
    if Path(name).name.startswith(DEMO_PREFIX):
        raise refused(f"{name} is a bundled demo model; it can't be deleted here")
    for root in ctx.folders.model_dirs(folder):
        try:
            path = safe_path(root, name)
        except UnsafePath as exc:
            raise refused(f"can't delete {name!r}: {exc}") from None
        if path.exists():
            return path
    raise refused(f"{name!r} is not in the {folder} folder")


def delete(ctx: ServerContext, folder: str, name: str) -> str:
    path = deletable(ctx, folder, name)
    if path.is_dir():  # a diffusers-format model
        shutil.rmtree(path)
    else:
        path.unlink()
    log.info("models panel: deleted %s/%s", folder, name)
    return f"Deleted {folder}/{name}"


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


# -- the panel ----------------------------------------------------------------------------------------------

def build(ctx: ServerContext) -> None:
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    table = gr.Dataframe(installed(ctx), headers=INSTALLED_HEADERS, label="Installed models", interactive=False,
                         elem_id="models-installed")
    with gr.Row(equal_height=True):
        selected_folder = gr.Textbox(label="Folder", interactive=False, scale=1)
        selected_name = gr.Textbox(label="Selected model", interactive=False, scale=3)
        delete_button = gr.Button("Delete", variant="stop", scale=0, min_width=100)
    with gr.Row(visible=False) as confirm_row:
        confirm_text = gr.Markdown()
        confirm = gr.Button("Yes, delete it", variant="stop", scale=0, min_width=140, elem_id="models-confirm-delete")
        cancel = gr.Button("Cancel", scale=0, min_width=100)
    hashing = gr.Markdown(hashing_status(), elem_id="models-hashing")
    message = gr.Markdown(elem_id="models-message")
    with gr.Accordion("Download a model", open=True):
        with gr.Row():
            source = gr.Textbox(label="URL or Hugging Face OWNER/REPO/FILE", scale=4, elem_id="models-source")
            folder = gr.Dropdown(list(LISTED_FOLDERS), value="checkpoints", label="Folder", scale=1)
            sha256 = gr.Textbox(label="sha256 (optional)", scale=2)
        download = gr.Button("Download", variant="primary", elem_id="models-download")
        progress = gr.Dataframe(download_rows(ctx), headers=DOWNLOAD_HEADERS, label="Downloads", interactive=False,
                                elem_id="models-downloads")
    timer = gr.Timer(PROGRESS_SECONDS)

    def pick(rows, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        values = rows.values.tolist()[row] if hasattr(rows, "values") else rows[row]
        return values[0], values[1], gr.Row(visible=False)

    table.select(pick, inputs=[table], outputs=[selected_folder, selected_name, confirm_row])
    refresh.click(lambda: relisted(ctx), outputs=[table, hashing])

    def ask(kind, name):
        deletable(ctx, kind, name)  # refused before asking
        return gr.Row(visible=True), f"Delete **{kind}/{name}** from disk?"

    delete_button.click(ask, inputs=[selected_folder, selected_name], outputs=[confirm_row, confirm_text])
    confirm.click(lambda kind, name: (delete(ctx, kind, name), installed(ctx), "", gr.Row(visible=False)),
                  inputs=[selected_folder, selected_name], outputs=[message, table, selected_name, confirm_row])
    cancel.click(lambda: gr.Row(visible=False), outputs=[confirm_row])
    download.click(lambda s, f, h: (start_download(ctx, s, f, h), download_rows(ctx)),
                   inputs=[source, folder, sha256], outputs=[message, progress])
    was_hashing = gr.State(False)

    def tick(busy_before):
        status = hashing_status()
        done_hashing = busy_before and not status  # the hashes just computed go into the list
        return download_rows(ctx), status, installed(ctx) if done_hashing else gr.skip(), bool(status)

    timer.tick(tick, inputs=[was_hashing], outputs=[progress, hashing, table, was_hashing], show_progress="hidden",
               queue=False)
