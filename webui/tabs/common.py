"""The controls every generation tab shares (checkpoint, VAE, clip skip, prompts and styles, sampler, size, seed,
batches, the Generate / Interrupt buttons, progress, preview and the result gallery), the refiner and
hires-fix settings of the tabs that have them, and their wiring."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
from gradio.components import Component

from ...nodes.formats import file_hashes
from ...nodes.formats.sampler_names import A1111_SAMPLERS, A1111_SCHEDULES
from ..context import ServerContext
from ..parameters import DEFAULT_CHECKPOINT, slider
from . import defaults as checkpoint_defaults
from . import generate as handlers
from . import pass_inputs, styles, xyz_plot
from .uploads import refuse_non_images
from .running import idle_html

# A1111's names, as the infotext writes them; the workflow gets ComfyUI's (generation.sampler_and_scheduler).
SAMPLER_CHOICES = list(A1111_SAMPLERS)
SCHEDULE_CHOICES = list(A1111_SCHEDULES)
SEND_TARGETS = ("img2img", "inpaint", "depth2img")


def checkpoint_choices(ctx: ServerContext) -> list[str]:
    return ctx.folders.list("checkpoints")


def default_checkpoint(choices: list[str]) -> str | None:
    if DEFAULT_CHECKPOINT in choices:
        return DEFAULT_CHECKPOINT
    return choices[0] if choices else None


def checkpoint_titles(ctx: ServerContext, choices: list[str]) -> list[tuple[str, str]]:
    """(label, value) pairs: A1111's title "name [hash]" once the hash is known, the file name otherwise."""
    hasher, titles = file_hashes.current(), []
    for name in choices:
        try:
            short = hasher.for_listing(ctx.folders.find("checkpoints", name))
        except (OSError, ValueError):
            short = None
        titles.append((f"{name} [{short}]" if short else name, name))
    return titles


def refresh_checkpoints(ctx: ServerContext, current: str | None) -> gr.Dropdown:
    """The checkpoint list again (new files queued for hashing)."""
    file_hashes.current().enqueue_folders(ctx.folders)
    choices = checkpoint_choices(ctx)
    return gr.Dropdown(choices=checkpoint_titles(ctx, choices),
                       value=current if current in choices else default_checkpoint(choices))


@dataclass
class GenerationTab:
    """The components of one generation tab; `inputs` are its form fields by name, in order."""

    mode: str
    inputs: dict[str, Component]
    refresh: gr.Button
    generate: gr.Button
    interrupt: gr.Button
    reuse_seed: gr.Button
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.Textbox
    results: gr.State
    selected: gr.State
    workflow_file: gr.DownloadButton
    send: dict[str, gr.Button] = field(default_factory=dict)
    depth: gr.Gallery | None = None
    demo_help: gr.Accordion | None = None
    export_grid: gr.Button | None = None  # the X/Y/Z plot's "Export grid workflow"
    grid_workflow: gr.File | None = None
    checkpoint_before: gr.State | None = None  # the checkpoint whose defaults the fields follow

    @property
    def outputs(self) -> list[Component]:
        """The components a GenerationOutputs update goes to, in its order."""
        outputs = [self.progress, self.preview, self.gallery, self.results, self.info, self.selected,
                   self.workflow_file, self.generate]
        return outputs + ([self.depth] if self.depth is not None else [])


def generation_tab(ctx: ServerContext, mode: str,
                   extra_inputs: Callable[[], dict[str, Component]] | None = None,
                   with_depth: bool = False, refiner: bool = False, hires: bool = False) -> GenerationTab:
    """Lay out a generation tab (inside the current gr.Tab) and wire its own events. `extra_inputs`
    builds the tab's own fields (init image, mask...) at the top of the settings column; `refiner` and
    `hires` add those settings below the seed."""
    choices = checkpoint_choices(ctx)
    checkpoint = default_checkpoint(choices)
    start = checkpoint_defaults.defaults(checkpoint, mode)
    inputs: dict[str, Component] = {}
    with gr.Row(equal_height=True):
        inputs["checkpoint"] = gr.Dropdown(checkpoint_titles(ctx, choices), value=checkpoint, label="Checkpoint",
                                           scale=4)
        inputs.update(pass_inputs.model_inputs(ctx))
        refresh = gr.Button("Refresh", scale=0, min_width=90)
    with gr.Row():
        with gr.Column(scale=5):
            inputs["prompt"] = gr.Textbox(start["prompt"], label="Prompt", lines=3, placeholder="What to draw")
            inputs["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2)
            with gr.Accordion("What the demo model can draw", open=False,
                              visible=checkpoint_defaults.is_demo(checkpoint)) as demo_help:
                gr.Markdown(checkpoint_defaults.vocabulary_markdown())
                gr.Examples([[text] for text in checkpoint_defaults.DEMO_EXAMPLES], inputs=[inputs["prompt"]],
                            label="Examples (click one)")
        with gr.Column(scale=1, min_width=140):
            generate = gr.Button("Generate", variant="primary")
            interrupt = gr.Button("Interrupt", variant="stop")
            style_controls = styles.style_controls(ctx)  # under the buttons, as A1111's
            inputs["styles"] = style_controls.styles
            styles.wire(ctx, style_controls, inputs["prompt"], inputs["negative_prompt"], refresh)
    with gr.Row():
        with gr.Column(scale=1):
            if extra_inputs is not None:
                inputs.update(extra_inputs())
            with gr.Row():
                inputs["sampler_name"] = gr.Dropdown(SAMPLER_CHOICES, value=start["sampler_name"], label="Sampler")
                inputs["scheduler"] = gr.Dropdown(SCHEDULE_CHOICES, value=start["scheduler"], label="Schedule type")
            inputs["steps"] = gr.Slider(**slider("steps"), value=20, label="Sampling steps")
            with gr.Row():
                inputs["width"] = gr.Slider(**slider("width"), value=start["width"], label="Width")
                inputs["height"] = gr.Slider(**slider("height"), value=start["height"], label="Height")
            with gr.Row():
                inputs["n_iter"] = gr.Slider(**slider("n_iter"), value=1, label="Batch count")
                inputs["batch_size"] = gr.Slider(**slider("batch_size"), value=1, label="Batch size")
            inputs["cfg_scale"] = gr.Slider(**slider("cfg_scale"), value=start["cfg_scale"], label="CFG scale")
            with gr.Row(equal_height=True):
                inputs["seed"] = gr.Number(-1, precision=0, label="Seed (-1: random)", scale=4)
                reuse_seed = gr.Button("Reuse seed", scale=0, min_width=110)
            inputs.update(pass_inputs.random_number_inputs())
            if hires:
                inputs.update(pass_inputs.hires_inputs(ctx))
            if refiner:
                inputs.update(pass_inputs.refiner_inputs(ctx))
            export_grid = grid_workflow = None
            if mode in xyz_plot.MODES:
                plot_inputs, export_grid, grid_workflow = xyz_plot.inputs(ctx, mode)
                inputs.update(plot_inputs)
        with gr.Column(scale=1):
            progress = gr.HTML(idle_html())
            preview = gr.Image(label="Preview", type="pil", interactive=False, height=200)
            # object_fit contain: whole images at their aspect ratio, never cropped to a square
            gallery = gr.Gallery(label="Results", columns=4, height="auto", preview=True, interactive=False,
                                 object_fit="contain")
            depth = gr.Gallery(label="Depth map", columns=4, height="auto", preview=True, interactive=False,
                               object_fit="contain") if with_depth else None
            info = gr.Textbox(label="Generation parameters", lines=4, interactive=False)
            with gr.Row():
                send = {target: gr.Button(f"Send to {target}", size="sm") for target in SEND_TARGETS}
                workflow_file = gr.DownloadButton("Save workflow", size="sm")
    refuse_non_images(*(c for c in inputs.values() if isinstance(c, (gr.Image, gr.ImageEditor))))
    for name in ("denoising_strength", "inpainting_fill"):  # the tab's own fields, made by extra_inputs
        if name in inputs and name in start:
            inputs[name].value = start[name]
    tab = GenerationTab(mode, inputs, refresh, generate, interrupt, reuse_seed, progress, preview, gallery,
                        info, gr.State(None), gr.State(0), workflow_file, send, depth, demo_help, export_grid,
                        grid_workflow)
    _wire(ctx, tab)
    return tab


def _wire(ctx: ServerContext, tab: GenerationTab) -> None:
    names = list(tab.inputs)
    with_depth = tab.depth is not None

    def run(request: gr.Request, *values):
        session = getattr(request, "session_hash", None)
        for update in handlers.generate(ctx, tab.mode, dict(zip(names, values)), session=session):
            yield tuple(update) if with_depth else tuple(update)[:-1]

    # The handler mostly waits on the queue, which serialises the work: no need to hold other users back.
    # Every click counts (trigger_mode multiple): one made while a run goes is queued, and the button says so.
    tab.generate.click(run, inputs=list(tab.inputs.values()), outputs=tab.outputs, concurrency_limit=None,
                       api_name=tab.mode, trigger_mode="multiple")
    for name, component in tab.inputs.items():  # a number typed out of range: say what became of it
        if isinstance(component, gr.Slider):
            component.release(handlers.check_typed_value(name), inputs=[component], outputs=None, preprocess=False,
                               show_progress="hidden", concurrency_limit=None, api_name=False)
    tab.interrupt.click(lambda results: handlers.interrupt(ctx, results), inputs=[tab.results], outputs=None,
                        queue=False)
    models = [name for name in ("checkpoint", "vae", "refiner_checkpoint", "hr_upscaler") if name in tab.inputs]

    def refresh(*current):
        return tuple(refresh_checkpoints(ctx, value) if name == "checkpoint" else pass_inputs.refreshed(ctx, name, value)
                     for name, value in zip(models, current))

    tab.refresh.click(refresh, inputs=[tab.inputs[n] for n in models], outputs=[tab.inputs[n] for n in models])
    _wire_checkpoint_defaults(tab)
    tab.gallery.select(handlers.select_image, inputs=[tab.results],
                       outputs=[tab.selected, tab.info, tab.workflow_file])
    tab.reuse_seed.click(handlers.reuse_seed, inputs=[tab.results, tab.selected], outputs=[tab.inputs["seed"]])
    if tab.export_grid is not None:
        tab.export_grid.click(lambda *values: xyz_plot.export_workflow(ctx, tab.mode, dict(zip(names, values))),
                              inputs=list(tab.inputs.values()), outputs=[tab.grid_workflow], api_name=False)


def _wire_checkpoint_defaults(tab: GenerationTab) -> None:
    """Another checkpoint: its defaults for the fields still at the previous one's, and the demo help
    shown only with the demo model."""
    checkpoint = tab.inputs["checkpoint"]
    start = checkpoint_defaults.defaults(checkpoint.value, tab.mode)
    names = [name for name in start if name in tab.inputs and name != "inpainting_fill"]  # same for both
    previous = tab.checkpoint_before = gr.State(checkpoint.value)

    def switch(before, after, *values):
        updates = checkpoint_defaults.switched(before, after, tab.mode, dict(zip(names, values)))
        return (*updates, gr.Accordion(visible=checkpoint_defaults.is_demo(after)), after)

    checkpoint.change(switch, inputs=[previous, checkpoint, *(tab.inputs[n] for n in names)],
                      outputs=[*(tab.inputs[n] for n in names), tab.demo_help, previous], queue=False)
