"""Notebook 05's interactive tools (ipywidgets): try a model on an image, choose a melanoma threshold.

The handlers are plain functions of their inputs (`uploaded_file`, `image_from_upload`,
`explain`, `threshold_report`), tested without a browser; `try_model_app` and `threshold_app`
only lay out the widgets and connect them to the handlers. They work with ipywidgets 8
(JupyterLab 4) and 7.7 (Colab), whose FileUpload values differ (see `uploaded_file`).
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from skinlib.data import CLASS_NAMES, ImageError, open_image
from skinlib.export import ExportedModel
from skinlib.gradcam import grad_cam, heatmap, overlay
from skinlib.interpret import MEL, melanoma_decision
from skinlib.interpret_plots import caveat, plot_threshold_point, plot_top_k, to_rgb

# Colab passes an upload through the notebook's message channel, which is not made for large
# files; dermoscopy JPEGs are 0.1-5 MB. Bigger files: copy them to the runtime, use `predict`.
MAX_UPLOAD_BYTES = 10 * 2**20
NOT_A_DEVICE = ("<b>A teaching tool, not a medical device.</b> Its answers must never be used to diagnose "
                "anyone: see a doctor about any skin lesion that worries you.")


def uploaded_file(value) -> tuple[str, bytes] | None:
    """(file name, bytes) of the last file in a FileUpload's `value`, or None if there is none.

    ipywidgets 8: a tuple of dicts {"name", "type", "size", "content": memoryview, ...}.
    ipywidgets 7 (Colab's 7.7.1): a dict {file name: {"metadata": {...}, "content": bytes}}.
    """
    if not value:
        return None
    if isinstance(value, dict):
        name, item = list(value.items())[-1]
        return name, bytes(item["content"])
    item = list(value)[-1]
    return item["name"], bytes(item["content"])


def image_from_upload(name: str, content: bytes, max_bytes: int = MAX_UPLOAD_BYTES):
    """The uploaded bytes as an RGB PIL image, checked as the kit checks every image; ImageError
    (naming the file) for an empty, oversized, damaged or non-image file."""
    if len(content) > max_bytes:
        raise ImageError(f"{name}: {len(content) / 2**20:.1f} MB is more than this tool accepts "
                         f"({max_bytes / 2**20:.0f} MB); use a smaller image, or `python -m skinlib predict`")
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else ""
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return open_image(tmp)
    except ImageError as err:
        raise ImageError(str(err).replace(tmp, name)) from None
    finally:
        os.remove(tmp)


@dataclass
class Explanation:
    """What the model makes of one image: class probabilities, the crop it saw, the Grad-CAM map."""

    probs: np.ndarray  # (classes,)
    crop: np.ndarray  # (H, W, 3) in [0, 1]
    heat: np.ndarray  # (H, W) in [0, 1], for the predicted class


def explain(exported: ExportedModel, image) -> Explanation:
    """Run `exported` on one PIL image (its own preprocessing) and explain the predicted class."""
    batch = exported.transform()(image)[None]
    cams, logits = grad_cam(exported.model.cpu(), batch)
    return Explanation(probs=logits.softmax(1)[0].numpy(), crop=to_rgb(batch)[0],
                       heat=heatmap(cams, batch.shape[-2:])[0].numpy())


def full_names(classes) -> list[str]:
    """Each class with its name spelled out, "MEL (melanoma)"; a class the kit does not know stays as it is."""
    return [f"{c} ({CLASS_NAMES[c]})" if c in CLASS_NAMES else c for c in classes]


def explanation_figure(result: Explanation, classes, title: str = "", heading: str = "") -> Figure:
    """The crop the model saw (titled `title`), its top 3 classes, and the Grad-CAM overlay, side by
    side, under `heading` (which model, and SYNTHETIC when it learned from synthetic data)."""
    names = full_names(classes)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), width_ratios=(1, 1.3, 1),
                             layout="constrained")
    axes[0].imshow(result.crop)
    axes[0].set_title(title or "image", fontsize=9)
    plot_top_k(result.probs, [name.replace(" (", "\n(") for name in names], k=3, ax=axes[1])
    axes[2].imshow(overlay(result.crop, result.heat))
    axes[2].set_title(f"Grad-CAM for\n{names[int(result.probs.argmax())]}", fontsize=9)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), ax=axes[2], shrink=0.8,
                       ticks=[0, 0.5, 1])  # the overlay's colours, as in notebook 04's Grad-CAM figure
    bar.set_label("evidence (1: strongest)", fontsize=8)
    for ax in (axes[0], axes[2]):
        ax.axis("off")
    if heading:
        fig.suptitle(heading)
    plt.close(fig)
    return fig


def threshold_report(targets, mel_probs, threshold: float, synthetic: bool = False,
                     smoke: bool = False, pretrained: bool = True) -> tuple[str, Figure]:
    """HTML with sensitivity, specificity and the MEL-against-rest counts at `threshold`, and the
    ROC curve with that operating point marked; both say SYNTHETIC when `synthetic`, and SMOKE run
    when `smoke` (a model trained for a few batches: its numbers mean nothing), and RANDOM initial
    weights when the model did not start from ImageNet's (`pretrained` False)."""
    d = melanoma_decision(targets, mel_probs, threshold)
    melanomas = d["tp"] + d["fn"]
    marks = [word for word, true in (("SYNTHETIC data", synthetic), ("SMOKE run", smoke),
                                     ("RANDOM initial weights", not pretrained)) if true]
    said = f"<b>{', '.join(marks)}</b>: " if marks else ""  # one list, not "A: B: C: refer when"
    html = (f"<div>{said}refer when P(MEL) &ge; <b>{threshold:.2f}</b>: "
            f"sensitivity <b class='sensitivity'>{d['sensitivity']:.3f}</b> "
            f"({d['tp']} of {melanomas} melanoma{'s' if melanomas != 1 else ''} referred), "
            f"specificity <b class='specificity'>{d['specificity']:.3f}</b> "
            f"({d['tn']} of {d['tn'] + d['fp']} other lesions not referred)</div>"
            "<table style='border-collapse: collapse; margin-top: 4px'>"
            "<tr><td></td><th>referred</th><th>not referred</th></tr>"
            f"<tr><th>melanoma</th><td>{d['tp']} found</td><td>{d['fn']} missed</td></tr>"
            f"<tr><th>other</th><td>{d['fp']} false alarms</td><td>{d['tn']} spared</td></tr></table>")
    truth = np.asarray(targets) == MEL
    if truth.all() or not truth.any():
        return html + "<p>(no ROC curve: the test images need melanomas and other lesions)</p>", None
    fpr, tpr, _ = roc_curve(truth, mel_probs)
    return html, plot_threshold_point(fpr, tpr, (1 - d["specificity"], d["sensitivity"]), threshold,
                                      title=f"Where the threshold puts you{caveat(synthetic, smoke, pretrained)}")


def _show(output: w.Output, *items: Figure) -> None:
    """Replace what `output` shows (set directly, so it works from any callback and without a kernel)."""
    output.outputs = ()
    for figure in items:
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=90)  # a PNG shows the same in JupyterLab, Colab and tests
        output.append_display_data(Image(data=png.getvalue()))


def try_model_app(models: dict[str, ExportedModel], test_images: dict[str, str], synthetic: bool = False,
                  smoke: bool = False, pretrained: bool = True) -> w.VBox:
    """Pick a model and a test image (label -> path) or upload one: image, top 3, Grad-CAM; the
    figure is headed by the model's name, and says SYNTHETIC when the models learned from synthetic data
    and SMOKE run when they trained for a few batches only (`smoke`)."""
    model_box = w.Dropdown(options=list(models), description="model")
    image_box = w.Dropdown(options=list(test_images), description="test image")
    upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
    out, message = w.Output(), w.HTML()

    def show(image, title):
        exported = models[model_box.value]
        heading = (f"{model_box.value}{', trained on SYNTHETIC data' if synthetic else ''}"
                   f"{' (SMOKE run: a few batches, its answers mean nothing)' if smoke else ''}"
                   f"{', RANDOM initial weights' if not pretrained else ''}")
        _show(out, explanation_figure(explain(exported, image), exported.classes, title, heading))

    def on_test_image(_=None):
        show(open_image(test_images[image_box.value]), image_box.value)

    def on_upload(change):
        found = uploaded_file(change["new"])
        try:
            if found is not None:
                show(image_from_upload(*found), found[0])
                message.value = ""
        except ImageError as err:
            message.value = f"<span style='color: #b00'>{err}</span>"

    image_box.observe(on_test_image, names="value")
    model_box.observe(on_test_image, names="value")
    upload.observe(on_upload, names="value")
    on_test_image()
    return w.VBox([w.HTML(NOT_A_DEVICE), w.HBox([model_box, image_box, upload]), message, out])


def threshold_app(targets, mel_probs, value: float = 0.5, synthetic: bool = False,
                  smoke: bool = False, pretrained: bool = True) -> w.VBox:
    """A melanoma threshold slider with live sensitivity, specificity, counts and ROC point
    (labelled SYNTHETIC when `synthetic`, SMOKE run when `smoke`)."""
    slider = w.FloatSlider(value=value, min=0.0, max=1.0, step=0.01, description="P(MEL) \u2265",
                           continuous_update=False, readout_format=".2f")
    slider.add_class("skinlib-threshold")
    report, out = w.HTML(), w.Output()
    report.add_class("skinlib-threshold-report")

    def update(_=None):
        html, figure = threshold_report(targets, mel_probs, slider.value, synthetic, smoke, pretrained)
        report.value = html
        _show(out, *([figure] if figure is not None else []))

    slider.observe(update, names="value")
    update()
    return w.VBox([w.HTML(NOT_A_DEVICE), slider, report, out])
