"""What `python -m skinlib predict` writes and prints, with a tiny model file (fast).

The network is a stand-in (test_predict.py uses a trained SimpleCNN): these tests are about the
outputs: which names the images and overlays get, which folder the overlays may go to, and the
SYNTHETIC label of a model trained on the synthetic set. Also: 16-bit images are scaled to 8 bits.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from skinlib import cli
from skinlib.data import CLASSES, IMAGES_DIR
from skinlib.export import export_model, load_model
from skinlib.storage.folders import MARKER
from skinlib.images import open_image
from skinlib.models import MODELS


class TinyNet(nn.Sequential):
    """Four 8x8 filters and a linear head; the filters are where Grad-CAM looks."""

    def __init__(self, num_classes: int = 8):
        super().__init__(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def tiny_model_file(path, synthetic: bool):
    torch.manual_seed(0)
    return export_model(path, TinyNet(), "resnet50", data={"fingerprint": "0" * 64, "synthetic": synthetic})


@pytest.fixture(autouse=True)
def tiny_networks(monkeypatch):
    # the model files say resnet50; its registry entry builds the tiny network instead
    monkeypatch.setitem(MODELS, "resnet50", dataclasses.replace(
        MODELS["resnet50"], build=lambda num_classes, **_: TinyNet(num_classes), model_class=TinyNet,
        gradcam_layer="0"))


@pytest.fixture
def model(tmp_path):
    return tiny_model_file(tmp_path / "real" / "model.pt", synthetic=False)


@pytest.fixture
def synthetic_model(tmp_path):
    return tiny_model_file(tmp_path / "synthetic" / "model.pt", synthetic=True)


def picture(path, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(["predict", *map(str, argv), "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    return status, out, err


def top_k(model_file, path, k: int = 3) -> str:
    """The printed line of one image, computed outside predict."""
    exported = load_model(model_file)
    with torch.no_grad():
        probs = exported.model(exported.transform()(open_image(path, any_format=True))[None]).softmax(1)[0]
    values, indices = probs.topk(k)
    return f"{path}: " + "  ".join(f"{CLASSES[i]} {v:.3f}" for v, i in zip(values, indices))


# ---------------------------------------------------------------- the --cam folder
def test_cam_writes_into_a_kit_folder_whose_marker_records_every_overlay(model, tmp_path, capsys):
    images = [picture(tmp_path / "in" / "a.jpg"), picture(tmp_path / "in" / "b.png", 1)]
    cams = tmp_path / "cams"
    assert run(capsys, *images, "--model", model, "--cam", cams)[0] == 0
    record = json.loads((cams / MARKER).read_text())
    assert record["kind"] == "gradcam" and record["files"] == ["a_gradcam.png", "b_gradcam.png"]
    assert sorted(p.name for p in cams.iterdir()) == [".skinlib-lock", "a_gradcam.png", "b_gradcam.png", MARKER]
    assert all((cams / name).read_bytes().startswith(b"\x89PNG") for name in record["files"])


def test_a_rerun_replaces_its_overlays_and_keeps_a_file_the_user_added(model, tmp_path, capsys):
    image = picture(tmp_path / "a.jpg")
    cams = tmp_path / "cams"
    assert run(capsys, image, "--model", model, "--cam", cams)[0] == 0
    (cams / "a_gradcam.png").write_bytes(b"old")
    (cams / "notes.txt").write_text("the user's notes")
    assert run(capsys, image, "--model", model, "--cam", cams)[0] == 0
    assert (cams / "a_gradcam.png").read_bytes().startswith(b"\x89PNG")
    assert (cams / "notes.txt").read_text() == "the user's notes"


def test_an_unrecorded_file_under_an_overlays_name_is_never_replaced(model, tmp_path, capsys):
    images = [picture(tmp_path / "a.jpg"), picture(tmp_path / "b.jpg", 1)]
    cams = tmp_path / "cams"
    assert run(capsys, images[0], "--model", model, "--cam", cams)[0] == 0
    (cams / "b_gradcam.png").write_text("the user's own figure")
    status, out, err = run(capsys, *images, "--model", model, "--cam", cams)
    assert status == 1 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(cams / "b_gradcam.png") in err and out == ""
    assert (cams / "b_gradcam.png").read_text() == "the user's own figure"


# ---------------------------------------------------------------- images of one name
def test_images_are_printed_as_given_so_two_of_one_name_stay_apart(model, tmp_path, capsys):
    images = [picture(tmp_path / "d1" / "x.jpg"), picture(tmp_path / "d2" / "x.jpg", 1)]
    status, out, _ = run(capsys, *images, "--model", model)
    assert status == 0
    assert out.splitlines() == [top_k(model, images[0]), top_k(model, images[1])]


def test_overlays_of_images_sharing_a_stem_are_named_after_the_whole_name(model, tmp_path, capsys):
    for seed, name in enumerate(["x.jpg", "x.png", "y.jpg"]):
        picture(tmp_path / "in" / name, seed)
    cams = tmp_path / "cams"
    assert run(capsys, tmp_path / "in", "--model", model, "--cam", cams, "--batch-size", "2")[0] == 0
    assert sorted(p.name for p in cams.glob("*.png")) == ["x.jpg_gradcam.png", "x.png_gradcam.png",
                                                          "y_gradcam.png"]


def test_two_images_of_one_name_in_two_folders_are_refused_with_cam(model, tmp_path, capsys):
    images = [picture(tmp_path / "d1" / "x.jpg"), picture(tmp_path / "d2" / "x.jpg", 1)]
    status, _, err = run(capsys, *images, "--model", model, "--cam", tmp_path / "cams")
    assert status == 1 and len(err.splitlines()) == 1
    assert f"{images[0]} and {images[1]} would both have the overlay x.jpg_gradcam.png" in err
    assert not (tmp_path / "cams").exists()


# ---------------------------------------------------------------- --csv
def test_csv_also_prints_each_images_top_k(model, tmp_path, capsys):
    image = picture(tmp_path / "a.jpg")
    status, out, _ = run(capsys, image, "--model", model, "--csv", tmp_path / "p.csv")
    assert status == 0
    assert out.splitlines() == [top_k(model, image), f"wrote 1 rows to {tmp_path / 'p.csv'}"]
    assert list(pd.read_csv(tmp_path / "p.csv").columns) == ["image", "predicted", "probability", *CLASSES]


def test_a_file_name_that_is_not_utf8_is_written_with_a_replacement_character(model, tmp_path, capsys):
    folder = tmp_path / "in"
    picture(folder / "x.jpg")
    odd = os.fsdecode(bytes(folder) + b"/bad\xff.jpg")  # a name from another system's encoding (Latin-1 "badÿ")
    os.rename(folder / "x.jpg", odd)
    status, _, err = run(capsys, folder, "--model", model, "--csv", tmp_path / "p.csv", "--cam", tmp_path / "cams")
    assert status == 0, err
    assert pd.read_csv(tmp_path / "p.csv")["image"].tolist() == [f"{folder}/bad\ufffd.jpg"]
    assert os.listdir(tmp_path / "cams").count(os.fsdecode(b"bad\xff_gradcam.png")) == 1  # named as the image is


# ---------------------------------------------------------------- SYNTHETIC
def test_a_model_trained_on_synthetic_data_says_so_in_the_printout_csv_and_overlays(
        synthetic_model, tmp_path, capsys, monkeypatch):
    from skinlib import predict

    titles = []
    plot = predict.plot_gradcam
    monkeypatch.setattr(predict, "plot_gradcam", lambda *a, **kw: titles.extend(a[2]) or plot(*a, **kw))
    images = [picture(tmp_path / "a.jpg"), picture(tmp_path / "b.jpg", 1)]
    status, out, _ = run(capsys, *images, "--model", synthetic_model, "--csv", tmp_path / "p.csv",
                         "--cam", tmp_path / "cams")
    assert status == 0
    assert out.splitlines()[0].startswith("SYNTHETIC: this model was trained on synthetic images")
    assert out.splitlines()[1:3] == [top_k(synthetic_model, image) for image in images]
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["note"].str.startswith("SYNTHETIC").all() and len(table) == 2
    assert len(titles) == 2 and all(title.endswith("\nSYNTHETIC model") for title in titles)


def test_a_model_trained_on_real_data_prints_no_synthetic_label(model, tmp_path, capsys):
    status, out, _ = run(capsys, picture(tmp_path / "a.jpg"), "--model", model, "--csv", tmp_path / "p.csv")
    assert status == 0 and "SYNTHETIC" not in out
    assert "note" not in pd.read_csv(tmp_path / "p.csv").columns


# ---------------------------------------------------------------- 16-bit images
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_greyscale_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, suffix):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / f"grey16{suffix}")
    assert Image.open(tmp_path / f"grey16{suffix}").mode == "I;16"
    rgb = np.asarray(open_image(tmp_path / f"grey16{suffix}"))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255] and (rgb == rgb[..., :1]).all()


def test_a_32_bit_image_with_values_beyond_16_bits_is_one_error_naming_it(model, tmp_path, capsys):
    Image.fromarray(np.full((8, 8), 1.5, dtype=np.float32)).save(tmp_path / "float.tif")
    status, _, err = run(capsys, tmp_path / "float.tif", "--model", model)
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 'float.tif'}: an image of mode F")


def test_8_bit_jpegs_decode_exactly_as_pillow_decodes_them(tmp_path, real_sample_dir):
    paths = sorted((real_sample_dir / IMAGES_DIR).glob("*.jpg"))[:3]
    for mode, seed in (("RGB", 0), ("L", 1), ("CMYK", 2)):
        pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, len(mode)), dtype=np.uint8)
        paths.append(tmp_path / f"{mode}.jpg")
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels).convert(mode).save(paths[-1])
    for path in paths:
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(np.asarray(open_image(path)), expected), path


# ---------------------------------------------------------------- what a folder gives
def test_a_folder_gives_its_images_of_every_format_and_names_what_it_skips(model, tmp_path, capsys):
    folder = tmp_path / "mine"
    picture(folder / "a.jpg")
    names = ["a.jpg", "B.JPG", *(f"p{suffix}" for suffix in (".bmp", ".gif", ".png", ".tif", ".webp"))]
    for name in names[1:]:
        Image.open(folder / "a.jpg").save(folder / name, format="BMP" if name == "B.JPG" else None)
    (folder / "sub").mkdir()
    (folder / "notes.txt").write_text("the user's notes")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    status, out, err = run(capsys, folder, "--model", model)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"{folder}: skipped what is not an image file (3: gone.jpg, notes.txt, sub/); "
                        f"subfolders are not searched")
    assert lines[1:] == [top_k(model, folder / name) for name in sorted(names)]
