"""Models: SimpleCNN against the seed's layer sizes, ResNet-50's weights without the internet."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time

import pytest
import torch
from PIL import Image
from torchvision.models import resnet50 as torchvision_resnet50

from skinlib import models
from skinlib.models import (
    MODELS,
    PretrainedWeightsUnavailable,
    SimpleCNN,
    build_model,
    count_parameters,
    download_weights,
    resnet50,
)

# The seed's SimpleCNN, layer by layer: weights + biases.
SEED_LAYER_PARAMETERS = {
    "conv1": 3 * 16 * 5 * 5 + 16,  # 1,216
    "conv2": 16 * 32 * 5 * 5 + 32,  # 12,832
    "fc1": 89_888 * 1200 + 1200,  # 107,866,800
    "fc2": 1200 * 840 + 840,  # 1,008,840
    "fc3": 840 * 8 + 8,  # 6,728
}


@pytest.fixture(autouse=True)
def private_torch_home(tmp_path, monkeypatch):
    """Every test gets an empty torch hub cache, so the real one is neither read nor written."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def simple_cnn():
    torch.manual_seed(0)
    return SimpleCNN()


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A randomly initialised torchvision ResNet-50 state_dict (1000-class fc), as an ImageNet file would be."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50-imagenet-like.pth"
    torch.save(torchvision_resnet50(weights=None).state_dict(), path)
    return path


def test_simplecnn_layers_have_the_seed_parameter_counts(simple_cnn):
    for name, expected in SEED_LAYER_PARAMETERS.items():
        assert count_parameters(getattr(simple_cnn, name)) == expected, name


def test_simplecnn_has_108_896_416_parameters(simple_cnn):
    assert sum(SEED_LAYER_PARAMETERS.values()) == 108_896_416
    assert count_parameters(simple_cnn) == 108_896_416


def test_simplecnn_flattens_to_32x53x53(simple_cnn):
    assert simple_cnn.fc1.in_features == 32 * 53 * 53 == 89_888


def test_simplecnn_maps_a_224_batch_to_8_logits(simple_cnn):
    with torch.no_grad():
        out = simple_cnn(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 8)


def test_simplecnn_rejects_other_image_sizes_with_a_clear_message(simple_cnn):
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\), got \(2, 3, 128, 128\)"):
        simple_cnn(torch.randn(2, 3, 128, 128))


def test_count_parameters_trainable_only_skips_frozen():
    model = resnet50(pretrained=False)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.fc.requires_grad_(True)
    assert count_parameters(model, trainable_only=True) == 2048 * 8 + 8


def test_resnet50_without_pretraining_has_an_8_class_head():
    model = resnet50(pretrained=False)
    assert model.fc.in_features == 2048 and model.fc.out_features == 8
    assert count_parameters(model) == 23_524_424  # torchvision's 25,557,032 minus 1000-class fc, plus 8-class fc


def test_resnet50_loads_a_local_imagenet_file_and_replaces_fc(imagenet_file):
    reference = torch.load(imagenet_file, weights_only=True)
    model = resnet50(weights_path=imagenet_file)
    assert torch.equal(model.conv1.weight, reference["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, reference["layer4.2.bn3.running_var"])
    assert model.fc.weight.shape == (8, 2048)


def test_resnet50_loads_its_own_8_class_state_dict(tmp_path):
    trained = resnet50(pretrained=False)
    path = tmp_path / "finetuned.pth"
    torch.save(trained.state_dict(), path)
    model = resnet50(weights_path=path)
    assert torch.equal(model.fc.weight, trained.fc.weight)


def test_resnet50_names_a_weights_file_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(16, 3, 5, 5)}, path)
    with pytest.raises(ValueError, match="other.pth does not fit ResNet"):
        resnet50(weights_path=path)


def test_resnet50_names_a_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a tensor file")
    with pytest.raises(ValueError, match="notes.pth is not a readable PyTorch state_dict"):
        resnet50(weights_path=path)


def test_resnet50_rejects_an_unknown_weights_name():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        resnet50(weights="IMAGENET22K")


def test_build_model_builds_every_registered_name():
    assert set(MODELS) == {"simplecnn", "resnet50"}
    assert isinstance(build_model("SimpleCNN", num_classes=3), SimpleCNN)
    assert build_model("resnet50", num_classes=3, pretrained=False).fc.out_features == 3


def test_build_model_lists_the_choices_for_an_unknown_name():
    with pytest.raises(ValueError, match=r"unknown model 'vgg16'.*'resnet50', 'simplecnn'"):
        build_model("vgg16")


def test_simplecnn_loads_its_own_weights_file(simple_cnn, tmp_path):
    torch.save(simple_cnn.state_dict(), tmp_path / "cnn.pth")
    model = build_model("simplecnn", weights_path=tmp_path / "cnn.pth")
    assert torch.equal(model.fc1.weight, simple_cnn.fc1.weight)


# --- downloads, against servers on 127.0.0.1 started by the tests ------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www (anything else is 404)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server():
    """Accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_download_404_fails_fast_naming_the_url_and_the_ways_out(file_server, tmp_path):
    _, base = file_server
    url = f"{base}/resnet50-0676ba61.pth"
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable) as caught:
        download_weights(url, tmp_path / "out.pth", timeout=2, progress=False)
    assert time.monotonic() - start < 2
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and "HTTP 404" in message
    for way_out in ("pretrained=False", "--no-pretrained", "weights_path=", "--weights FILE"):
        assert way_out in message
    assert list(tmp_path.glob("out.pth*")) == []  # no partial file left behind


@pytest.fixture
def stalling_server():
    """Answers with headers and the first bytes of a 1 MB body, then never sends the rest."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        conn = listener.accept()[0]
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 1000)
        stop.wait()
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_download_that_stalls_midway_times_out(stalling_server, tmp_path):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match=r"no answer within 0.5 s"):
        download_weights(f"{stalling_server}/w.pth", tmp_path / "w.pth", timeout=0.5, progress=False,
                         retries=1, backoff=0)  # the retry resumes, and stalls again
    assert time.monotonic() - start < 3
    assert list(tmp_path.glob("w.pth*")) == []


def test_download_from_a_silent_server_times_out(silent_server, tmp_path):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match=r"no answer within 0.5 s"):
        download_weights(f"{silent_server}/w.pth", tmp_path / "w.pth", timeout=0.5, progress=False,
                         retries=0)
    assert time.monotonic() - start < 3
    assert list(tmp_path.glob("w.pth*")) == []


def test_resnet50_without_network_raises_instead_of_hanging(silent_server, monkeypatch):
    monkeypatch.setitem(models.WEIGHT_URLS, "IMAGENET1K_V1", f"{silent_server}/resnet50-0676ba61.pth")
    monkeypatch.setattr(models, "DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(models, "DOWNLOAD_RETRIES", 0)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match="resnet50-0676ba61.pth"):
        resnet50(progress=False)
    assert time.monotonic() - start < 5


def test_download_rejects_a_file_whose_hash_does_not_match_its_name(file_server, tmp_path):
    root, base = file_server
    (root / "resnet50-deadbeef.pth").write_bytes(b"corrupt")
    with pytest.raises(PretrainedWeightsUnavailable, match="corrupt"):
        download_weights(f"{base}/resnet50-deadbeef.pth", tmp_path / "resnet50-deadbeef.pth", progress=False)
    assert list(tmp_path.glob("resnet50-deadbeef*")) == []


def test_resnet50_downloads_once_then_uses_the_hub_cache(file_server, imagenet_file, monkeypatch, tmp_path):
    root, base = file_server
    data = imagenet_file.read_bytes()
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torchvision's naming: hash prefix
    (root / name).write_bytes(data)
    monkeypatch.setitem(models.WEIGHT_URLS, "IMAGENET1K_V2", f"{base}/{name}")

    first = resnet50(weights="IMAGENET1K_V2", progress=False)
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / name).is_file()
    (root / name).unlink()  # the server now answers 404: a second call must not need it
    second = resnet50(weights="IMAGENET1K_V2", progress=False)

    reference = torch.load(imagenet_file, weights_only=True)
    assert torch.equal(first.conv1.weight, reference["conv1.weight"])
    assert torch.equal(second.conv1.weight, reference["conv1.weight"])


class _CutOnce(http.server.BaseHTTPRequestHandler):
    """Serves `body`: the first answer stops half-way, later ones honour Range (as S3 does)."""

    body, ranges = b"", []

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        self.send_header("Content-Length", str(len(self.body) - start))
        self.end_headers()
        end = len(self.body) if len(type(self).ranges) > 1 else len(self.body) // 2
        self.wfile.write(self.body[start:end])
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_dropped_download_of_the_weights_resumes_where_it_stopped(imagenet_file, monkeypatch, tmp_path):
    data = imagenet_file.read_bytes()
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    handler = type("Handler", (_CutOnce,), {"body": data, "ranges": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = download_weights(f"http://127.0.0.1:{server.server_address[1]}/{name}", tmp_path / name,
                                progress=False, retries=1, backoff=0)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.ranges == [None, f"bytes={len(data) // 2}-"]  # the second request asked for the rest
    assert dest.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial file left


def test_simplecnn_with_pretrained_weights_is_an_error_not_random_weights():
    from skinlib.errors import SkinlibError

    with pytest.raises(SkinlibError, match="simplecnn has no pretrained weights.*--no-pretrained"):
        build_model("simplecnn", pretrained=True)
    assert isinstance(build_model("simplecnn"), SimpleCNN)  # its own default: from scratch


def test_the_command_line_offers_exactly_the_models_build_model_knows():
    from skinlib import cli

    train = cli.get_args_parser()._subparsers._group_actions[0].choices["train"]
    model_option = next(a for a in train._actions if a.dest == "model")
    assert sorted(model_option.choices) == sorted(MODELS)


class TinyNet(torch.nn.Module):
    """A network of one's own, small enough to train in a second."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def tiny(num_classes=8, pretrained=False, weights_path=None):
    return TinyNet(num_classes)


def test_a_network_is_one_registry_entry_that_trains_predicts_and_draws_grad_cam(synthetic_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    from skinlib import cli
    from skinlib.config import TrainConfig
    from skinlib.export import load_model
    from skinlib.gradcam import default_layer, grad_cam
    from skinlib.train import run

    monkeypatch.setitem(MODELS, "tiny", models.Network(tiny, TinyNet, "features", imagenet_weights=False,
                                                       title="TinyNet"))
    config = TrainConfig(data=str(synthetic_dir), out=str(tmp_path / "run"), model="tiny", epochs=1, batch_size=8,
                         max_batches=2, num_workers=0, progress=False, device="cpu")
    assert run(config)["config"]["model"] == "tiny"
    exported = load_model(tmp_path / "run" / "model.pt")
    assert exported.architecture == "tiny" and isinstance(exported.model, TinyNet)
    assert default_layer(exported.model) is exported.model.features
    image = sorted((synthetic_dir / "ISIC_2019_Training_Input").glob("*.jpg"))[0]
    cams, logits = grad_cam(exported.model, exported.transform()(Image.open(image))[None])
    assert cams.shape[0] == 1 and logits.shape == (1, 8)

    capsys.readouterr()
    assert cli.main(["predict", str(image), "--model", str(tmp_path / "run" / "model.pt"),
                     "--cam", str(tmp_path / "cams"), "--quiet"]) == 0  # the command line knows it too
    assert image.stem in capsys.readouterr().out
    assert len(list((tmp_path / "cams").glob("*.png"))) == 1
    # the weights option is for networks with ImageNet weights
    assert cli.main(["train", "--model", "tiny", "--out", str(tmp_path / "x"), "--weights", str(image)]) == 2
    assert "tiny has none" in capsys.readouterr().err
