"""The MONAI Label app (``monailabel_app/``) as a real server, over real HTTP.

MONAI Label has its own environment (``monailabel_app/constraints.txt``: numpy<2, pydicom<3, a
torch/torchvision pair), made by the README's command into ``.venv-label``; ``.ci/run`` makes it and
runs this file with ``BRAINSEG_MONAILABEL_PYTHON`` set, so there a missing environment fails
instead of skipping. The server is started from a copy of the app, bound to 127.0.0.1 on a free
port, asked what a 3D Slicer MONAI Label plugin asks, and stopped by its own process id.
"""

from __future__ import annotations

import csv
import email
import email.policy
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import BUNDLE, REPO, SAMPLE_SPLIT, run_bundle, write_volume

APP = REPO / "monailabel_app"
#: What the 3D Slicer MONAI Label plugin sends with an inference request.
SLICER_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False, "device": "cpu"}


def _label_python() -> Path:
    configured = os.environ.get("BRAINSEG_MONAILABEL_PYTHON")
    python = Path(configured) if configured else REPO / ".venv-label" / "bin" / "python"
    if not python.is_file():
        if configured:
            pytest.fail(f"BRAINSEG_MONAILABEL_PYTHON={configured}: no such interpreter")
        pytest.skip("no MONAI Label environment (.venv-label): make it with the README's MONAI Label install command")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content hash: what 'nothing was written there' is checked against."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server: ``(base_url, folders)``; stopped, by its process id, after the module's tests."""
    python = _label_python()
    root = tmp_path_factory.mktemp("monailabel")
    app = root / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "__pycache__"))
    folders = {name: root / name for name in ("studies", "home", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "HOME": str(folders["home"]),
        "TMPDIR": str(folders["tmp"]),  # the server's uploads and results: checked gone afterwards
        "PYTHONPATH": "",
    }
    command = [str(python), "-m", "monailabel.main", "start_server", "--app", str(app)]
    command += ["--studies", str(folders["studies"]), "--conf", "bundle", str(BUNDLE)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = open(root / "server.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}):\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the server did not answer in 180 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, {**folders, "app": app, "root": root}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process (and group), not a port's owner
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _images_left(folder: Path) -> list[str]:
    """Uploads and masks left in the server's temporary folder (its own logging config and caches aside)."""
    suffixes = (".jpg", ".png", ".nii", ".nii.gz", ".nrrd", ".mha")
    return [p.name for p in folder.rglob("*") if p.name.lower().endswith(suffixes)]


def _infer(url: str, path: Path, params: dict) -> tuple[dict, bytes, str]:
    """``POST /infer/brainseg`` of a file: the result's params, mask bytes and file name."""
    with open(path, "rb") as f:
        reply = requests.post(
            f"{url}/infer/brainseg",
            params={"output": "all"},
            files={"file": (path.name, f)},
            data={"params": json.dumps(params)},
            timeout=300,
        )
    assert reply.status_code == 200, reply.text
    message = email.message_from_bytes(
        b"Content-Type: " + reply.headers["Content-Type"].encode() + b"\r\n\r\n" + reply.content,
        policy=email.policy.HTTP,
    )
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    result = json.loads(parts["params"].get_content())
    image = parts["image"]
    return result, image.get_payload(decode=True), image.get_filename()


def _read_mask(data: bytes, name: str, folder: Path):
    import itk

    path = folder / name
    path.write_bytes(data)
    return itk.imread(str(path))


def _geometry(image) -> tuple:
    import itk

    return (
        tuple(itk.size(image)),
        tuple(np.round(image.GetSpacing(), 6)),
        tuple(np.round(image.GetOrigin(), 6)),
        tuple(np.round(itk.array_from_matrix(image.GetDirection()).ravel(), 6)),
    )


def _png_labels(path: Path) -> np.ndarray:
    """The label map (1 tumor, 2 possible tumor) of a PNG mask ``monai.bundle run`` wrote (255, 128)."""
    from scripts.verdict import PNG_VALUES

    png = np.asarray(Image.open(path))
    labels = np.zeros(png.shape, np.uint8)
    for label, value in PNG_VALUES.items():
        labels[png == value] = label
    return labels


def test_info_lists_the_model_its_labels_and_dimension(server):
    url, _ = server
    info = requests.get(f"{url}/info/", timeout=30).json()
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["post_processed_outputs"]["pred"]["channel_def"]
    labels = {name: int(value) for value, name in channels.items() if name != "background"}
    assert list(info["models"]) == ["brainseg"]
    model = info["models"]["brainseg"]
    assert model["labels"] == labels == info["labels"] == {"tumor": 1, "possible tumor": 2}
    assert model["dimension"] == 2 and model["type"] == "segmentation"
    assert model["version"] == info["version"] == metadata["version"]
    assert info["trainers"] == {}
    assert "model_filename" not in model["config"]  # model_box.pt is not offered as another model


def test_masks_have_the_input_geometry_and_monai_bundle_run_pixels(server, tmp_path):
    """A JPEG slice, a 1-slice NIfTI and a 3-slice NRRD volume, with the Slicer plugin's parameters."""
    import itk

    url, folders = server
    bundle_before = _tree(BUNDLE)
    jpegs = sorted(SAMPLE_SPLIT.glob("*.jpg"))[:3]
    grey = np.stack([np.asarray(Image.open(f).convert("L"), np.float32) for f in jpegs])
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(jpegs[0], cases / "slice.jpg")
    tilted = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # a direction that must survive, not identity
    write_volume(cases / "one.nii.gz", grey[1:2], [0.5, 0.6, 4.0], [12.5, -20.0, 7.0], tilted)
    write_volume(cases / "volume.nrrd", grey, [0.9, 0.8, 5.0], [-3.0, 4.0, 1.5], np.eye(3))

    # monai.bundle run's masks of the same files, for the pixels
    expected = tmp_path / "bundle_run"
    args = ["--config_file", str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE)]
    proc = run_bundle(*args, "--dataset_dir", str(cases), "--output_dir", str(expected), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    received = tmp_path / "received"
    received.mkdir()
    for name, reference, bundle_mask in (
        ("slice.jpg", None, "slice.png"),
        ("one.nii.gz", cases / "one.nii.gz", "one.nii.gz"),
        ("volume.nrrd", cases / "volume.nrrd", "volume.nii.gz"),
    ):
        result, data, filename = _infer(url, cases / name, SLICER_PARAMS)
        assert filename.endswith(".nrrd"), filename
        mask = _read_mask(data, f"{Path(name).stem}.nrrd", received)
        voxels = itk.array_from_image(mask)
        assert voxels.dtype == np.uint8 and set(np.unique(voxels)) <= {0, 1, 2}, name
        if reference is None:  # a JPEG: the mask lies on its pixel grid, as ITK reads the JPEG itself
            image = itk.imread(str(cases / name))
            assert _geometry(mask) == _geometry(image), name
            run = _png_labels(expected / bundle_mask)
        else:
            image = itk.imread(str(reference), itk.F)
            assert _geometry(mask) == _geometry(image), name
            run = itk.array_from_image(itk.imread(str(expected / bundle_mask))).astype(np.uint8)
        assert np.array_equal(voxels, run), name  # tumor 1 and possible tumor 2, as monai.bundle run wrote them
        slices = 1 if voxels.ndim == 2 else voxels.shape[0]
        stack = voxels.reshape(slices, -1)
        tumor, possible = (stack == 1).any(axis=1), (stack == 2).any(axis=1)
        assert result["slices"] == slices and result["tumor_slices"] == int(tumor.sum()), name
        assert result["possible_tumor_slices"] == int((possible & ~tumor).sum()), name
        assert result["verdict"] == (
            "tumor" if tumor.any() else "possible tumor" if possible.any() else "no tumor found"
        )
        assert result["label_names"] == {"tumor": 1, "possible tumor": 2}
        if reference is None:
            assert "slice_report" not in result  # a 2D image: its one row is the verdict above
        else:  # a volume: the rows monai.bundle run wrote to <name>_slices.csv, field by field
            with open(expected / f"{Path(name).name.split('.')[0]}_slices.csv", newline="", encoding="utf-8") as f:
                written = list(csv.DictReader(f))
            got = [{k: str(row[k]) for k in written[0]} for row in result["slice_report"]]
            assert got == written and len(got) == slices, name
            assert [row["verdict"] for row in result["slice_report"]] == [
                "tumor" if t else "possible tumor" if p else "no tumor found" for t, p in zip(tumor, possible)
            ], name
    assert run.any(), "the sample volume should hold a tumor somewhere"

    # the Slicer plugin's own flow: upload the volume to the datastore, then segment it by its image id
    with open(cases / "one.nii.gz", "rb") as f:
        reply = requests.put(f"{url}/datastore/image", params={"image": "case7"}, files={"file": ("one.nii.gz", f)})
    assert reply.status_code == 200 and reply.json()["image"] == "case7", reply.text
    reply = requests.post(
        f"{url}/infer/brainseg",
        params={"image": "case7", "output": "image"},
        data={"params": json.dumps(SLICER_PARAMS)},
    )
    assert reply.status_code == 200, reply.text
    by_id = _read_mask(reply.content, "case7.nrrd", received)
    assert _geometry(by_id) == _geometry(itk.imread(str(cases / "one.nii.gz"), itk.F))
    assert np.array_equal(itk.array_from_image(by_id), itk.array_from_image(itk.imread(str(expected / "one.nii.gz"))))

    # "segment this slice" of a volume: that slice's mask, the others empty
    result, data, _ = _infer(url, cases / "volume.nrrd", {**SLICER_PARAMS, "slice_index": 1})
    one = itk.array_from_image(_read_mask(data, "one_slice.nrrd", received))
    assert np.array_equal(one[1], run[1]) and not one[[0, 2]].any()
    assert result["tumor_slices"] == int((run[1] == 1).any())
    assert [row["slice"] for row in result["slice_report"]] == [1]  # the one slice segmented, by its number

    # a 2D PNG mask for a JPEG when asked, the same pixels as label values
    result, data, filename = _infer(url, cases / "slice.jpg", {**SLICER_PARAMS, "result_extension": ".png"})
    png = np.asarray(Image.open(__import__("io").BytesIO(data)))
    assert filename.endswith(".png") and png.shape == grey.shape[1:]
    assert np.array_equal(png, _png_labels(expected / "slice.png"))
    assert set(np.unique(png)) <= {0, 1, 2}

    # nothing written outside the server's own folders; its uploads and results are gone once sent
    time.sleep(1)
    assert _tree(BUNDLE) == bundle_before
    assert _images_left(folders["tmp"]) == []
    assert sorted(p.name for p in folders["app"].iterdir() if p.name not in ("model", "logs", "bin")) == sorted(
        p.name for p in APP.iterdir() if p.name not in ("model", "logs", "bin", "__pycache__")
    )


@pytest.mark.parametrize(
    "upload, params, message",
    [
        (("scan.jpg", b"not a picture"), {}, "not an image file PIL can read"),
        (("scan.nii.gz", b"\x1f\x8b truncated"), {}, "cannot read"),
        ("slice", {"result_extension": ".exe"}, "result_extension: '.exe'"),
        ("volume", {"result_extension": ".png"}, "result_extension: '.png' holds one slice"),
        ("slice", {"result_dtype": "float32"}, "result_dtype: 'float32'"),
        ("slice", {"device": "gpu9"}, "device: 'gpu9'"),
        ("volume", {"slice_index": 2}, "slice_index: 2 is not a slice of this image (0 to 1)"),
        ("volume", {"slice_index": "1; rm -rf /"}, "slice_index: expected a slice number"),
    ],
)
def test_a_bad_request_gets_a_clear_error_and_the_server_keeps_serving(server, tmp_path, upload, params, message):
    url, folders = server
    if upload == "slice":
        upload = ("slice.jpg", sorted(SAMPLE_SPLIT.glob("*.jpg"))[0].read_bytes())
    elif upload == "volume":
        grey = np.asarray(Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]).convert("L"), np.float32)
        write_volume(tmp_path / "v.nrrd", np.stack([grey, grey]), [1.0, 1.0, 2.0], [0.0, 0.0, 0.0], np.eye(3))
        upload = ("v.nrrd", (tmp_path / "v.nrrd").read_bytes())
    reply = requests.post(
        f"{url}/infer/brainseg", files={"file": upload}, data={"params": json.dumps(params)}, timeout=300
    )
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert message in detail, detail
    assert str(folders["tmp"]) not in detail  # the upload is named by its own name, not the server's temp file
    assert requests.get(f"{url}/info/", timeout=30).ok
    time.sleep(0.5)
    assert _images_left(folders["tmp"]) == []  # neither the refused upload nor a half-written result
