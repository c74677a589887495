#!/usr/bin/env python
"""Open-vocabulary segmentation in the browser (gradio; install with `pip install -e ".[demo]"`).

    python tools/web_demo.py --config-file configs/cdam_voc21.yaml --opts MODEL.CDAM.CLIP_WEIGHTS /path/ViT-B-16.pt

Open the printed address, drop an image, type a vocabulary (';' separates classes, ',' synonyms), pick a
config and a base variant, and press Segment: the page shows the overlay with its legend, the area of each
class, and a download of the label PNG (pixel value = class index). With a CDAM config, click a pixel of
the input image to see what its patch attends to: the CDAM attention map next to the base's own attention
(for sc_clip the main path's, for resclip its RCS and SFR mixture). Several --config-file give a choice of
configs (a ClusterCAM config segments its fixed classes). The page says which CLIP weights run: a local
file, an open_clip tag, or random weights (offline: --opts MODEL.CDAM.CLIP_WEIGHTS random, or
CLIP_MODEL tiny:ViT-B-16 for a small random model). Config overrides go after --opts.
"""
import argparse
import html
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections import OrderedDict

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline-friendly: no usage reporting

DEFAULT_VOCABULARY = "background; person; dog, puppy; cat; car; tree; sky; grass"
CACHED_MODELS = 2  # each holds a CLIP model

CSS = """
#banner {padding: 8px 14px; border-radius: 8px; margin-bottom: 4px;}
#banner.random {background: #fff4e5; border: 1px solid #f0b45a;}
#banner.weights {background: #eef6ee; border: 1px solid #8cc58c;}
#legend table {width: 100%; border-collapse: collapse; font-size: 15px;}
#legend td, #legend th {padding: 3px 8px; border-bottom: 1px solid #e5e5e5; text-align: left;}
#legend td.area, #legend th.area {text-align: right;}
#legend .swatch {display: inline-block; width: 14px; height: 14px; border: 1px solid #555;
                 vertical-align: middle; margin-right: 8px;}
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", required=True, metavar="FILE",
                        help="a CDAM or ClusterCAM config; repeat to offer several")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides for every config, KEY VALUE pairs (last argument group)")
    return parser


def describe_weights(cfg) -> tuple:
    """(css class, Markdown) saying which weights a config runs with (``cdam_d2.weights.resolve_weights``)."""
    from cdam_d2.weights import resolve_weights

    if cfg.MODEL.META_ARCHITECTURE == "ClusterCAM":
        source = resolve_weights(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
        if source.kind != "random":
            return "weights", f"**ClusterCAM weights:** `{source.value}`"
        return "random", ("**ClusterCAM runs with an untrained decoder** (MODEL.WEIGHTS is empty): results are "
                          "noise. Pass `--opts MODEL.WEIGHTS model_final.pth`.")
    options = cfg.MODEL.CDAM
    model = f"`{options.CLIP_MODEL}`"
    source = resolve_weights(options.CLIP_WEIGHTS, "MODEL.CDAM.CLIP_WEIGHTS")
    if source.kind == "random" or options.CLIP_MODEL.startswith("tiny:"):
        return "random", (f"**CLIP {model} runs with RANDOM weights**: segmentations are noise; this page only "
                          "shows how the demo works. For real results pass "
                          "`--opts MODEL.CDAM.CLIP_WEIGHTS /path/to/ViT-B-16.pt`.")
    if source.kind == "file":
        return "weights", f"**CLIP {model}**, weights from the local file `{source.value}`."
    return "weights", (f"**CLIP {model}**, open_clip pretrained weights `{source.value}` (downloaded once by "
                       "open_clip; offline, pass a local file with `--opts MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt`).")


def legend_html(result, colors) -> str:
    """Table of the classes present: colour, name, share of the image."""
    from cdam_d2.engine.overlay import legend_entries

    rows = []
    for index, name, area in legend_entries(result.labels, result.names):
        color = "#%02x%02x%02x" % tuple(int(c) for c in colors[index])
        rows.append(f'<tr><td><span class="swatch" style="background:{color}"></span>{html.escape(name)}</td>'
                    f'<td class="area">{100 * area:.1f}%</td></tr>')
    return ('<table><thead><tr><th>class</th><th class="area">area</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


class Segmenter:
    """The predictors behind the page: one per (config, base, CDAM on/off), the last few kept."""

    def __init__(self, config_files, opts):
        from cdam_d2.engine.predictor import load_predictor_cfg

        self.opts = list(opts)
        self.cfgs = {os.path.basename(path): load_predictor_cfg(path, self.opts) for path in config_files}
        self.predictors = OrderedDict()
        self.lock = threading.Lock()
        self.output_dir = tempfile.mkdtemp(prefix="cdam_web_demo_")  # the downloads; removed by close()

    def close(self):
        """Remove the files written for the page's downloads."""
        shutil.rmtree(self.output_dir, ignore_errors=True)

    def is_cdam(self, config_name) -> bool:
        return self.cfgs[config_name].MODEL.META_ARCHITECTURE == "CDAM"

    def predictor(self, config_name, base, use_cdam):
        from cdam_d2.engine.predictor import build_predictor

        cfg = self.cfgs[config_name]
        key = (config_name, base, use_cdam) if self.is_cdam(config_name) else (config_name,)
        if key not in self.predictors:
            opts = ["MODEL.CDAM.BASE", base, "MODEL.CDAM.USE_CDAM", str(use_cdam)] if self.is_cdam(config_name) else []
            self.predictors[key] = build_predictor(cfg, opts=opts, input_format="RGB")
            while len(self.predictors) > CACHED_MODELS:
                self.predictors.popitem(last=False)
        self.predictors.move_to_end(key)
        return self.predictors[key]

    def banner(self, config_name):
        """Gradio callback: the weights banner of the chosen config."""
        import gradio as gr

        css_class, text = describe_weights(self.cfgs[config_name])
        return gr.Markdown(text, elem_classes=[css_class])

    def segment(self, image, vocabulary, config_name, base, use_cdam, opacity):
        """Gradio callback: (overlay image, legend HTML, label PNG path, overlay PNG path)."""
        import gradio as gr

        from cdam_d2.engine.overlay import class_colors, render_overlay, save_label_png

        if image is None:
            raise gr.Error("Upload or drop an image first.")
        vocabulary = (vocabulary or "").strip()
        with self.lock:
            try:
                predictor = self.predictor(config_name, base, use_cdam)
                if self.is_cdam(config_name):
                    predictor.set_vocabulary(vocabulary or None)
                elif vocabulary:
                    gr.Warning("ClusterCAM segments its fixed classes; the vocabulary is ignored.")
                result = predictor(image, probabilities=False)
            except ValueError as error:  # a bad vocabulary, a config that does not fit
                raise gr.Error(str(error))
        colors = class_colors(result.names)
        folder = tempfile.mkdtemp(dir=self.output_dir)
        label_path, overlay_path = os.path.join(folder, "labels.png"), os.path.join(folder, "overlay.png")
        save_label_png(result.labels, label_path, colors)
        overlay = render_overlay(image, result.labels, result.names, opacity, colors)
        overlay.save(overlay_path)
        return overlay, legend_html(result, colors), label_path, overlay_path

    def patch_attention_tiles(self, image, vocabulary, config_name, base, point):
        """The two tiles (CDAM attention, base attention) of the patch under ``point`` = (x, y) of ``image``,
        from the CDAM predictor of (config, base) (CDAM's map, ATP words included, even while the page shows
        the base alone)."""
        import gradio as gr

        from cdam_d2.cdam.visualize import attention_tiles, image_patch_attention

        if image is None:
            raise gr.Error("Upload or drop an image first, then click a pixel of it.")
        if not self.is_cdam(config_name):
            raise gr.Error("Patch attention is CDAM's: choose a CDAM config.")
        cfg = self.cfgs[config_name]
        with self.lock:
            try:
                predictor = self.predictor(config_name, base, True)
                predictor.set_vocabulary((vocabulary or "").strip() or None)
                found = image_patch_attention(predictor.model, image, predictor.queries, tuple(point),
                                              cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            except ValueError as error:  # a bad vocabulary, a point outside the image
                raise gr.Error(str(error))
        return attention_tiles(found, base)

    def patch_attention(self, image, vocabulary, config_name, base, event):
        """Gradio callback of a click on the input image (``event.index`` = [x, y] in its pixels): a picture of
        the clicked patch's CDAM attention next to the base's, over the sliding window holding it."""
        from cdam_d2.engine.panels import compose

        x, y = event.index
        tiles = self.patch_attention_tiles(image, vocabulary, config_name, base, (x, y))
        return compose(tiles, [], columns=2, tile_height=256, title=f"What the patch at ({x}, {y}) attends to")


def build_page(segmenter):
    import gradio as gr

    from cdam_d2.cdam.modeling.dense_clip import BASES

    names = list(segmenter.cfgs)
    css_class, banner = describe_weights(segmenter.cfgs[names[0]])
    with gr.Blocks(title="cdam_d2: open-vocabulary segmentation") as page:
        gr.Markdown("## cdam_d2 · open-vocabulary segmentation\nCDAM (ICLR 2025) on CLIP, in Detectron2. "
                    "Separate classes with `;` and synonyms with `,`; with the background threshold on, "
                    "unsure pixels go to the **first** class.")
        banner = gr.Markdown(banner, elem_id="banner", elem_classes=[css_class])
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label="Image (upload or drop)", type="numpy", image_mode="RGB",
                                 sources=["upload", "clipboard"], elem_id="input-image")
                vocabulary = gr.Textbox(label="Vocabulary (empty: the config's dataset classes)",
                                        value=DEFAULT_VOCABULARY, lines=2, placeholder="background; cat; dog, puppy",
                                        elem_id="vocabulary")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
                with gr.Row():
                    config = gr.Dropdown(names, value=names[0], label="Config", elem_id="config")
                    base = gr.Dropdown(list(BASES), value=segmenter.cfgs[names[0]].MODEL.CDAM.BASE, label="Base",
                                       elem_id="base")
                with gr.Row():
                    use_cdam = gr.Checkbox(value=True, label="CDAM (off: the base alone)")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
            with gr.Column(scale=3):
                overlay = gr.Image(label="Segmentation", type="pil", format="png", interactive=False,
                                   buttons=[], elem_id="overlay")
                with gr.Row():
                    legend = gr.HTML(elem_id="legend")
                    with gr.Column():
                        download_labels = gr.DownloadButton("Download label PNG", elem_id="download-labels")
                        download_overlay = gr.DownloadButton("Download overlay PNG", elem_id="download-overlay")
                gr.Markdown("**Patch attention** (CDAM configs): click a pixel of the input image to see what "
                            "its patch attends to, in CDAM's map and in the base's own attention.")
                attention = gr.Image(label="Patch attention", show_label=False, type="numpy", format="png",
                                     interactive=False, buttons=[], elem_id="patch-attention")
        run.click(segmenter.segment, [image, vocabulary, config, base, use_cdam, opacity],
                  [overlay, legend, download_labels, download_overlay])

        def select_patch(image, vocabulary, config, base, event: gr.SelectData):
            return segmenter.patch_attention(image, vocabulary, config, base, event)

        image.select(select_patch, [image, vocabulary, config, base], attention)
        config.change(segmenter.banner, config, banner)
    return page


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import gradio as gr
    except ImportError:
        parser.error('the web demo needs gradio: pip install -e ".[demo]"')
    try:
        segmenter = Segmenter(args.config_file, args.opts)
    except (ValueError, FileNotFoundError, KeyError) as error:
        parser.error(str(error))
    # A terminated server unwinds like Ctrl-C, so the download files are removed either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        first = next(iter(segmenter.cfgs.values()))
        # Build the first model now: its weights load before the page opens, and a bad config fails here.
        segmenter.predictor(next(iter(segmenter.cfgs)), first.MODEL.CDAM.BASE, first.MODEL.CDAM.USE_CDAM)
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched online
        build_page(segmenter).launch(server_name=args.host, server_port=args.port, theme=theme, css=CSS,
                                     footer_links=[], allowed_paths=[segmenter.output_dir])
    finally:
        segmenter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
