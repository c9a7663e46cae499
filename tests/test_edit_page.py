"""The eCLIPsed edit page as a person uses it, in a real headless browser: moving a slider
changes the picture, several directions apply one after the other, and the picture on show is
the one the server renders for those alphas. A tiny random generator and two hand-made
directions in the stages' format stand in for a pipeline run, so the test takes seconds."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from flows.tracking_server import free_port
from lightning_modules.eclipsed.stylegan import StyleGenerator
from tests.browser import artifacts_dir, browser_page
from tests.conftest import ROOT, stage_env, wait_for_health

# row -> (prompt, part, alpha range, the layers its direction moves)
ROWS = {"glasses": ("a person with glasses", "glasses", (-5.0, 5.0), (0, 1, 2)),
        "smile": ("a smiling person", "mouth", (0.5, 3.0), (3, 4, 5))}   # trained on alpha >= 0.5 alone
K = 2   # directions learned per row; the page applies the first
TRUNCATION = 0.7

# The picture on show, read back from the browser's own decoded pixels (RGBA, row-major).
READ_PIXELS = """img => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
}"""
# The query of the sliders and seed as they stand, which the page asks the server for.
CURRENT_QUERY = """() => {
  const q = new URLSearchParams({seed: document.getElementById("seed").value});
  for (const s of document.querySelectorAll("input[type=range]")) q.set(s.name, s.value);
  return q.toString();
}"""


def edit_env() -> dict[str, str]:
    return {**stage_env(), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """params.yaml, a generator and each row's directions where the eclipsed stages put them."""
    from tasks.core.profiles import compose

    root = tmp_path_factory.mktemp("edit_page")
    compose(root=ROOT, output=root / "params.yaml")
    torch.manual_seed(0)
    generator = StyleGenerator({4: 16, 8: 16, 16: 8}, style_dim=32, n_mlp=2)
    generator.update_latent_avg(256)
    generator.save_pretrained(root / "data" / "models" / "stylegan")
    for row, (prompt, part, alpha_range, layers) in ROWS.items():
        directions = torch.zeros(K, generator.num_ws, generator.w_dim)
        vectors = torch.nn.functional.normalize(torch.randn(K, generator.w_dim), dim=1) * 2.0
        directions[:, list(layers)] = vectors[:, None]    # W: one vector repeated on the chosen layers
        folder = root / "data" / "eclipsed" / row
        folder.mkdir(parents=True)
        save_file({"directions": directions}, str(folder / "directions.safetensors"))
        (folder / "directions.json").write_text(json.dumps({
            "prompt": prompt, "part": part, "latent_space": "w", "layers": list(layers),
            "alpha_range": list(alpha_range), "generator": "data/models/stylegan", "truncation": TRUNCATION,
            "K": K}, indent=2))
    return root


@pytest.fixture(scope="module")
def page_server(workspace):
    port = free_port()
    log = workspace / "edit-page.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "flows.edit_page", "--rows", "glasses,smile", "--port",
                                   str(port), "--params", "params.yaml"], cwd=workspace, env=edit_env(),
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{uri}/health", server, log, timeout=120)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def served(uri: str, query: str) -> np.ndarray:
    """What GET /edit answers for `query`, as the browser's RGBA pixels."""
    with urllib.request.urlopen(f"{uri}/edit?{query}", timeout=60) as response:
        assert response.headers["Content-Type"] == "image/png"
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGBA")).reshape(-1)


def shown(page, image: str = "#edited") -> np.ndarray:
    return np.array(page.locator(image).evaluate(READ_PIXELS), dtype=np.uint8)


def wait_until_shown(page) -> str:
    """Wait until the edited picture on show is the one of the sliders as they stand; its query."""
    page.wait_for_function(f"() => document.getElementById('edited').dataset.query === ({CURRENT_QUERY})()")
    return page.locator("#edited").get_attribute("data-query")


def test_moving_a_slider_changes_the_picture(page_server, workspace):
    uri = page_server
    with browser_page(1100, 650) as page:
        page.goto(uri)
        for row, (prompt, part, (low, high), _) in ROWS.items():
            label = page.locator(f"label[for=alpha-{row}]").inner_text()
            assert prompt in label and part in label and f"[{low:g}, {high:g}]" in label, label
        start = wait_until_shown(page)
        assert start == "seed=0&alpha.glasses=0&alpha.smile=0"
        before = shown(page)
        assert (before == served(uri, start)).all()
        assert (shown(page, "#original") == served(uri, "seed=0")).all()   # alpha 0: no edit at all

        # a person moves the glasses slider ten steps to the right with the keyboard
        page.locator("#alpha-glasses").focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        assert page.locator("#alpha-glasses").input_value() == "1"
        assert page.locator("output[for=alpha-glasses]").inner_text() == "1"
        moved = wait_until_shown(page)
        assert moved == "seed=0&alpha.glasses=1&alpha.smile=0"
        after = shown(page)
        assert (after != before).any(), "moving the slider left the picture as it was"
        assert (after == served(uri, moved)).all()

        # then the smile slider (0 to 3: its trained range and no edit): both edits on the picture,
        # one after the other
        assert "[0.5, 3] and 0 (no edit)" in page.locator("label[for=alpha-smile]").inner_text()
        page.locator("#alpha-smile").focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        both_query = wait_until_shown(page)
        assert both_query == "seed=0&alpha.glasses=1&alpha.smile=0.3"
        both = shown(page)
        assert (both != after).any()
        assert (both == served(uri, both_query)).all()
        smile_alone = both_query.replace("alpha.glasses=1", "alpha.glasses=0")
        assert (both != served(uri, smile_alone)).any()   # the glasses edit is still applied
        page.screenshot(path=str(artifacts_dir() / "eclipsed-edit-page.png"))

        # another seed: another face, the same edits
        page.locator("#seed").fill("7")
        seven = wait_until_shown(page)
        assert seven.startswith("seed=7&") and seven.split("&")[1:] == both_query.split("&")[1:]
        assert (shown(page) != both).any()

        # a seed the server refuses: its reason on the page, the last picture kept
        page.locator("#seed").fill("-1")
        page.get_by_role("alert").filter(has_text="seed=-1").wait_for()
        assert (shown(page) == served(uri, seven)).all()


def test_edit_renders_the_sequential_edit_and_refuses_bad_values(page_server, workspace):
    from lightning_modules.eclipsed.editing import render, seeded_latents, style_codes, to_uint8
    from safetensors.torch import load_file

    uri = page_server
    # the picture is the generator's for w + alpha_1 d_1 + alpha_2 d_2 (each row's first direction)
    generator = StyleGenerator.from_pretrained(workspace / "data" / "models" / "stylegan").eval()
    first = {row: load_file(str(workspace / "data" / "eclipsed" / row / "directions.safetensors"))["directions"][0]
             for row in ROWS}
    ws = style_codes(generator, seeded_latents([3], generator.w_dim), TRUNCATION)
    expected = to_uint8(render(generator, ws, [(first["glasses"], -2.5), (first["smile"], 1.5)]))[0]
    picture = served(uri, "seed=3&alpha.glasses=-2.5&alpha.smile=1.5").reshape(*expected.shape[:2], 4)
    assert np.abs(picture[..., :3].astype(int) - expected.astype(int)).max() <= 1

    for query, said in (("alpha.glasses=5.5", "alpha.glasses=5.5: outside the row's alpha range, [-5, 5]"),
                        ("alpha.smile=-0.1", "alpha.smile=-0.1: outside the row's alpha range, [0.5, 3] and 0"),
                        ("alpha.smile=much", "alpha.smile='much': not a number"),
                        ("alpha.smile=nan", "alpha.smile=nan: not a finite number"),
                        ("alpha.beard=1", "alpha.beard: not a loaded row's alpha"),
                        ("seed=x", "seed='x': not a whole number")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/edit?{query}", timeout=30)
        assert refused.value.code == 422, query
        assert json.loads(refused.value.read())["detail"].startswith(said), query


def run_page(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.edit_page", "--params", "params.yaml", *args],
                          cwd=workspace, env=edit_env(), capture_output=True, text=True, timeout=120)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_row_without_directions_stops_before_the_server_starts(workspace):
    line = one_error_line(run_page(workspace, "--rows", "glasses,beard", "--port", str(free_port())))
    assert "--rows beard" in line and str(Path("data") / "eclipsed" / "beard" / "directions.safetensors") in line


def test_a_port_in_use_is_one_line(workspace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_error_line(run_page(workspace, "--rows", "glasses", "--port", str(port)))
    assert f"--port {port}" in line and "already" in line
