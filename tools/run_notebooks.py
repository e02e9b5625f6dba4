"""Run every course notebook in order and keep the executed copies, figures included.

    python tools/run_notebooks.py --out outputs/notebooks            # smoke on CPU, full on a GPU
    python tools/run_notebooks.py --out outputs/notebooks --smoke    # a few batches: minutes on a CPU
    python tools/run_notebooks.py --out outputs/notebooks --full     # the real settings (GPU advised)
    python tools/run_notebooks.py --out outputs/solutions --solutions  # the solution notebooks

OUT must be a new or empty folder, or one this script wrote before (it is marked as the kit's,
skinlib-folder.json); a file or a folder holding anything else is refused in one line. The
notebooks run one after the other in OUT (their working folder, so notebook 03 finds the
results notebook 02 saved under OUT/runs/), each written back as OUT/<name>.ipynb with its
outputs and as OUT/<name>.html for reading in a browser. The data is $SKINLIB_DATA, else the
embedded SYNTHETIC set. Smoke mode also sets SKINLIB_PRETRAINED=0 (no download: random
ResNet-50 weights) unless SKINLIB_PRETRAINED is already set. No cell may raise, in the student
notebooks too (their exercises not written): a failing cell stops its notebook, which is still
written up to that cell, and the exit status is then 1. Progress bars are saved
as their last state (a saved copy cannot replay a live bar). Without nbconvert's HTML templates
a notebook gets no .html, with a warning; its .ipynb is kept.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from skinlib.storage.folders import FolderError, claim_folder

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS, SOLUTIONS = ROOT / "notebooks", ROOT / "solutions"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def notebook_env(smoke: bool) -> dict[str, str]:
    """The environment variables the notebooks read, for this mode."""
    env = {"SKINLIB_SMOKE": "1" if smoke else "0"}
    if smoke and "SKINLIB_PRETRAINED" not in os.environ:
        env["SKINLIB_PRETRAINED"] = "0"
    return env


def run_notebook(source: Path, out: Path, timeout: int | None,
                 env: dict[str, str]) -> tuple[Path, float, str | None]:
    """Execute `source` with `out` as working folder and `env` as the kernel's environment;
    write the executed copy (.ipynb, .html).

    Returns (executed notebook path, seconds, error message or None).
    """
    notebook = nbformat.read(source, as_version=4)
    # The kernel's own log level: ipykernel warns about its local TCP transport on every start,
    # which would bury this script's report; errors in cells still come back in full.
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(out)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    except CellTimeoutError as exc:  # the kernel is stopped; the cells run so far are written below
        error = f"a cell ran longer than the timeout of {timeout} s (--timeout){_cell_preview(str(exc))}"
    except DeadKernelError as exc:
        error = f"the kernel died ({' '.join(str(exc).split()) or 'killed'}), e.g. out of memory"
    seconds = time.perf_counter() - start
    target = out / source.name
    settle_progress_bars(notebook)
    nbformat.write(notebook, target)
    _write_html(notebook, target.with_suffix(".html"))
    return target, seconds, error


def _cell_preview(message: str) -> str:
    """': <first line of the cell>' from nbclient's timeout message, which quotes the cell."""
    lines = message.splitlines()
    dashes = [i for i, line in enumerate(lines) if line.strip().startswith("----")]
    first = next((line.strip() for line in lines[dashes[0] + 1:] if line.strip()), "") if dashes else ""
    return f": {first}" if first else ""


def settle_progress_bars(notebook) -> None:
    """Replace each tqdm bar in the outputs by a line of text: the bar's last state.

    In a notebook, tqdm draws an ipywidgets box (text, bar, text) whose saved text form is its
    first frame ("train:   0%| 0/2"): a saved copy would show every run stalled at 0 %. The
    widget state that nbclient stores with the notebook holds the last frame.
    """
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            text = _progress_bar_text(state, view["model_id"]) if isinstance(view, dict) else None
            if text is not None:
                output["data"] = {"text/plain": text}
            if text != "":
                kept.append(output)
        if "outputs" in cell:
            cell.outputs = kept


def _progress_bar_text(state: dict, model_id: str) -> str | None:
    """The last frame of tqdm's box (HTML, FloatProgress, HTML) as text, "" for a bar that hid itself
    when done (leave=False); None for other widgets."""
    def model(reference: str) -> dict:
        return state.get(reference.removeprefix("IPY_MODEL_"), {})

    box = model(model_id)
    children = [model(child) for child in box.get("state", {}).get("children", [])]
    if box.get("model_name") != "HBoxModel" or [child.get("model_name") for child in children] != \
            ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    if model(box["state"].get("layout", "")).get("state", {}).get("visibility") == "hidden":
        return ""
    left, right = (html.unescape(children[i]["state"].get("value", "")) for i in (0, 2))
    progress = children[1]["state"]
    filled = round(10 * progress.get("value", 0) / progress["max"]) if progress.get("max") else 0
    return f"{left}|{'█' * filled:<10}|{right}".replace("\u2007", " ")  # tqdm pads with figure spaces


def _write_html(notebook, path: Path) -> None:
    from nbconvert import HTMLExporter

    try:
        body, _ = HTMLExporter().from_notebook_node(notebook)
    except Exception as error:  # missing templates (ValueError), a Jinja error...: the .ipynb is enough
        print(f"\n    warning: no {path.name}: nbconvert could not render HTML ({type(error).__name__}: "
              f"{error}); the executed .ipynb is kept", flush=True)
        return
    path.write_text(body, encoding="utf-8")


def claim_out(out: Path, sources: list[Path]) -> Path:
    """`out`, marked as the kit's (skinlib.storage.folders): a new or empty folder, or one this script wrote.

    Refused, with a FolderError naming it: a file, a folder holding anything else (the committed
    notebooks/ or solutions/ among them), or an executed copy's name taken by a file the kit did
    not write there. The notebooks' own results (runs/, caches) go there too, as their working folder.
    """
    folder = claim_folder(out.resolve(), "notebooks", option="--out")
    names = [name for source in sources for name in (source.name, source.with_suffix(".html").name)]
    taken = [name for name in names if (folder.path / name).exists() and not folder.owns(name)]
    if taken:
        raise FolderError(f"{folder.path / taken[0]} is not a file run_notebooks.py wrote, so it is not "
                          f"replaced; move it away or choose another --out")
    folder.record(*names)
    return folder.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the executed notebooks")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", dest="smoke", action="store_const", const=True,
                      help="a few batches per epoch (the default without a GPU)")
    mode.add_argument("--full", dest="smoke", action="store_const", const=False,
                      help="the notebooks' real settings (the default with a GPU)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds allowed per cell (default: 600 in smoke mode, no limit in full mode)")
    parser.add_argument("--solutions", action="store_true",
                        help="run the solution notebooks (solutions/) instead of the student ones")
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 01_simple_cnn")
    args = parser.parse_args(argv)

    smoke = (not gpu_available()) if args.smoke is None else args.smoke
    timeout = args.timeout if args.timeout is not None else (600 if smoke else None)
    sources = sorted((SOLUTIONS if args.solutions else NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names or s.name in args.names]
        if not sources:
            parser.error(f"no notebook matches {args.names}")
    try:
        out = claim_out(args.out, sources)
    except FolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    env = {**os.environ, **notebook_env(smoke)}
    print(f"running {len(sources)} notebook(s) in {'SMOKE' if smoke else 'FULL'} mode "
          f"on {env.get('SKINLIB_DATA') or 'the embedded SYNTHETIC data'}", flush=True)

    failed = 0
    for source in sources:
        print(f"  {source.name} ...", end=" ", flush=True)
        target, seconds, error = run_notebook(source, out, timeout, env)
        print(f"{'FAILED' if error else 'ok'} in {seconds:.0f} s -> {target}", flush=True)
        if error:
            print(f"    {error}", flush=True)
            failed += 1
    print(f"executed notebooks (with figures) are in {out}; open the .html files in a browser")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
