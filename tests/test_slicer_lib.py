"""The Slicer extension's Qt-free logic (slicer_extension/.../BrainTumorSegmentationLib) on a real MRML scene.

Uses the PyPI package ``slicer-core`` (real ``vtkMRMLScene``, segmentation logic and
storage nodes, no application) and the 12 real sample JPEGs. The scene checks themselves
live in the extension's ``Testing/Python/scene_checks.py`` (test code, not shipped), which the in-Slicer self-test
(``BrainTumorSegmentationTest``) runs too. Pixel checks run with two predictors: the
smoke-trained bundle model and a numpy intensity stand-in whose masks are far from uniform
(the smoke model marks nearly everything as tumor), so a flipped or transposed slice shows.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the MRML tests")

from conftest import BUNDLE, REPO, SAMPLE_SPLIT, SMOKE_NETWORK  # noqa: E402

MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
LIB_DIR = MODULE_DIR / "BrainTumorSegmentationLib"
SHIPPED_MODEL = BUNDLE / "models" / "model.pt"
for _folder in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import BrainTumorSegmentationLib as btl  # noqa: E402
import scene_checks as testing  # noqa: E402
import slicer  # noqa: E402
from BrainTumorSegmentationLib import dependencies  # noqa: E402

# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


def _option(command: list, name: str) -> str:
    """The value of ``name`` in a worker command, where each option and its value are one ``--name=value``."""
    (value,) = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    return value


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture(scope="module")
def samples():
    return testing.read_samples(SAMPLE_SPLIT)


@pytest.fixture(scope="module")
def smoke_predictor(smoke_model):
    from scripts.predictor import BundlePredictor

    return BundlePredictor(BUNDLE, ckpt_path=smoke_model, config_files=[SMOKE_NETWORK], device="cpu")


@pytest.fixture(params=["smoke", "intensity"])
def predictor(request):
    if request.param == "intensity":
        return testing.IntensityPredictor()
    return request.getfixturevalue("smoke_predictor")


@pytest.fixture(scope="module")
def tumor_predictor(request):
    """The shipped model when bundle/models/model.pt exists, else the smoke model; and whether it is trained."""
    if SHIPPED_MODEL.is_file():
        from scripts.predictor import BundlePredictor

        return BundlePredictor(BUNDLE, device="cpu"), True
    return request.getfixturevalue("smoke_predictor"), False


# --------------------------------------------------------------------------------------
# Import boundaries and orientation
# --------------------------------------------------------------------------------------


def test_lib_core_imports_without_slicer_torch_or_qt():
    """The package, its numpy layer and the worker import in a bare interpreter (no slicer, torch, qt)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import BrainTumorSegmentationLib as L;"
        "from BrainTumorSegmentationLib import inference, dependencies, worker;"
        "bad = sorted(m for m in ('slicer', 'torch', 'monai', 'qt', 'vtk') if m in sys.modules);"
        "assert not bad, bad; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_slicer_reader_orientation_matches_pil(scene, tmp_path, samples, smoke_predictor):
    """A JPEG read by Slicer's own volume reader (ITK -> vtkITK archetype reader) has [0] == the PIL array.

    slicer-core's ITK has no JPEG IO, so the JPEG is read with ITK (Slicer's reader underneath) and
    handed over as NRRD. The flip of 2D images is in IJK-to-RAS (diag(-1, -1, 1)), not in the voxels.
    """
    itk = pytest.importorskip("itk")
    sample = samples[0]
    image = itk.imread(str(SAMPLE_SPLIT / sample.name))
    assert np.array_equal(itk.array_from_image(image), sample.rgb)
    itk.imwrite(image, str(tmp_path / "jpeg.nrrd"))
    volume = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "jpeg")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "jpeg.nrrd"))
    assert storage.ReadData(volume)
    array = slicer.util.arrayFromVolume(volume)
    assert array.shape == (1, *sample.rgb.shape)
    assert np.array_equal(array[0], sample.rgb)
    assert np.allclose(testing.ijk_to_ras_array(volume)[:3, :3], testing.JPEG_IJK_TO_RAS_DIRECTIONS)

    segmentation = btl.segment_volume(volume, predictor=smoke_predictor)
    mask = btl.segment_mask_array(segmentation)
    assert np.array_equal(mask[0], smoke_predictor.predict_array(sample.rgb))


# --------------------------------------------------------------------------------------
# segment_volume on the scene (checks shared with the in-Slicer self-test)
# --------------------------------------------------------------------------------------


def test_2d_vector_volume_and_seg_nrrd(scene, tmp_path, samples, predictor):
    segmentation, mask = testing.check_2d_vector_volume(scene, predictor, samples[1])
    reference = btl.export_segment_labelmap(segmentation)[1]
    data = testing.check_save_roundtrip(segmentation, mask[None], reference, str(tmp_path / "out" / "case.seg.nrrd"))
    assert data["segments"][0]["terminology"]["category"] == ["SCT", "49755003", "Morphologically Altered Structure"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["case.seg.nrrd"]  # no temporary file left


def test_scalar_volume_with_geometry_loads_the_bundle(scene, samples, smoke_model, smoke_predictor):
    """Options load the predictor (bundle_dir + ckpt_path + config_files, CPU) and give predict_array's pixels."""
    segmentation, _ = testing.check_scalar_volume(
        scene,
        samples[2].grey,
        smoke_predictor,
        bundle_dir=BUNDLE,
        ckpt_path=smoke_model,
        config_files=[SMOKE_NETWORK],
        force_cpu=True,
    )
    volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    assert volume.GetSpacing() == pytest.approx(testing.TEST_SPACING)
    assert volume.GetOrigin() == pytest.approx(testing.TEST_ORIGIN)
    segment = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetNthSegmentID(0))
    assert testing.segment_tag(segment, btl.SOURCE_TAG) == smoke_predictor.name


def test_3d_volume_slice_by_slice(scene, samples, predictor):
    testing.check_3d_stack(scene, predictor, [s.grey for s in samples[:5]], batch_size=2)


def test_slicing_along_j(scene, samples, predictor):
    testing.check_axis(scene, predictor, samples[3].grey)


def test_bad_inputs_raise_and_leave_scene_unchanged(scene):
    messages = testing.check_bad_inputs(scene, testing.IntensityPredictor())
    assert len(messages) == 15


def test_missing_weights_leave_scene_unchanged(scene, samples, tmp_path):
    volume = testing.add_vector_volume(scene, samples[0].rgb)
    before = scene.GetNumberOfNodes()
    with pytest.raises(FileNotFoundError, match="not found"):
        btl.segment_volume(volume, bundle_dir=BUNDLE, ckpt_path=tmp_path / "missing.pt", config_files=[SMOKE_NETWORK])
    assert scene.GetNumberOfNodes() == before


def test_cancel_leaves_scene_unchanged(scene, samples, smoke_predictor):
    testing.check_cancel(scene, smoke_predictor, [s.grey for s in samples[:3]])


def test_rerun_replaces_segment_and_probability(scene, samples, predictor):
    testing.check_rerun_replaces(scene, predictor, samples[4].grey, samples[5].grey)


def test_mask_meets_ground_truth_boxes(scene, samples, tumor_predictor):
    """With the shipped model the masks must meet the COCO boxes; with only the smoke model the overlap is computed."""
    predictor, trained = tumor_predictor
    stats = testing.check_tumor_overlap(scene, predictor, samples, trained)
    assert len(stats) == len(samples)
    if not trained:
        print(f"bundle/models/model.pt absent: overlap of the smoke model only computed: {stats[:2]}...")


def test_all_checks_as_the_slicer_self_test_runs_them(scene, tmp_path, samples):
    testing.run_all_checks(
        scene, testing.IntensityPredictor(), samples[:4], str(tmp_path), trained=False, log=lambda m: None
    )


# --------------------------------------------------------------------------------------
# The numpy layer and the background worker
# --------------------------------------------------------------------------------------


def test_predict_volume_axes_and_shapes():
    stand_in = testing.IntensityPredictor()
    rng = np.random.default_rng(0)
    assert btl.resolve_axis((1, 20, 30)) == 2
    assert btl.resolve_axis((20, 1, 30)) == 1
    assert btl.resolve_axis((20, 30, 1)) == 0
    assert btl.resolve_axis((5, 20, 30)) == 2
    assert btl.resolve_axis((5, 20, 30), "j") == 1
    volume = rng.random((6, 1, 40)).astype(np.float32)  # flat along J: auto slices along J
    mask, prob = btl.predict_volume(volume, stand_in, with_probability=True)
    assert np.array_equal(mask[:, 0, :], stand_in.predict_array(volume[:, 0, :]))
    assert prob.dtype == np.float32 and prob.shape == volume.shape
    rgb = rng.integers(0, 255, (2, 16, 24, 4), dtype=np.uint8)
    mask, prob = btl.predict_volume(rgb, stand_in)
    assert prob is None and np.array_equal(mask[1], stand_in.predict_array(rgb[1]))
    grey1 = rng.random((2, 8, 8, 1))
    assert btl.predict_volume(grey1, stand_in)[0].shape == (2, 8, 8)
    for bad in (np.zeros((8, 8)), np.zeros((2, 8, 8, 2)), np.zeros((0, 8, 8))):
        with pytest.raises(ValueError):
            btl.predict_volume(bad, stand_in)


def test_the_slice_loop_is_given_only_the_geometry_its_bundle_takes():
    """``slice_loop_geometry``: this bundle's loop takes the directions and the spacing; a 0.6.4 bundle's the
    directions only, an older one's neither (their signatures); None values are left out."""
    import types

    from BrainTumorSegmentationLib import inference

    def resolve_axis_0_6_3(shape_kji, axis=None):
        raise AssertionError("only the signature is read")

    def predict_volume_0_6_3(array, predictor, axis=None, batch_size=8, with_probability=False, progress=None):
        raise AssertionError("only the signature is read")

    def resolve_axis_0_6_4(shape_kji, axis=None, direction=None):
        raise AssertionError("only the signature is read")

    def predict_volume_0_6_4(array, predictor, axis=None, batch_size=8, slice_reports=None, direction=None):
        raise AssertionError("only the signature is read")

    direction, spacing = np.eye(3), (0.5, 3.0, 0.5)
    volumes = inference.bundle_module("volumes", BUNDLE)
    geometry = inference.slice_loop_geometry(volumes, direction=direction, spacing=spacing)
    assert list(geometry) == ["direction", "spacing"]
    assert geometry["direction"] is direction and geometry["spacing"] is spacing
    assert list(inference.slice_loop_geometry(volumes, spacing=spacing)) == ["spacing"]
    assert inference.slice_loop_geometry(volumes) == {}
    v064 = types.SimpleNamespace(resolve_axis=resolve_axis_0_6_4, predict_volume=predict_volume_0_6_4)
    assert list(inference.slice_loop_geometry(v064, direction=direction, spacing=spacing)) == ["direction"]
    v063 = types.SimpleNamespace(resolve_axis=resolve_axis_0_6_3, predict_volume=predict_volume_0_6_3)
    assert inference.slice_loop_geometry(v063, direction=direction, spacing=spacing) == {}


def test_worker_process_matches_in_process(tmp_path, samples, smoke_model, smoke_predictor):
    """The background process (what the Slicer module runs in PythonSlicer) gives the in-process result."""
    volume = np.stack([s.grey for s in samples[:3]])
    np.save(tmp_path / "in.npy", volume)
    args = [sys.executable, str(LIB_DIR / "worker.py"), "--input", str(tmp_path / "in.npy")]
    args += ["--bundle-dir", str(BUNDLE), "--ckpt-path", str(smoke_model), "--config-file", str(SMOKE_NETWORK)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*args, "--output", str(tmp_path / "out.npz"), "--force-cpu", "--probability", "--batch-size", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"BUNDLE {smoke_predictor.name}"
    assert [line for line in lines if line.startswith("PROGRESS")][-1] == "PROGRESS 1.0000"
    assert lines[-1] == f"DONE {tmp_path / 'out.npz'}"
    expected_mask, expected_prob = btl.predict_volume(volume, smoke_predictor, batch_size=2, with_probability=True)
    with np.load(tmp_path / "out.npz") as out:  # no pickle: the per-slice report is JSON text
        assert np.array_equal(out["mask"], expected_mask)
        assert np.allclose(out["probability"], expected_prob, atol=1e-6)
        rows = json.loads(str(out["slice_rows"]))
    reports: list = []
    btl.predict_volume(volume, smoke_predictor, batch_size=2, slice_reports=reports)
    assert [(r["slice"], r["verdict"], r["input_unusual"]) for r in rows] == [
        (r["index"], r["verdict"], r["input_unusual"]) for r in reports
    ]

    # errors come back as one ERROR line and exit code 2, with no output file
    bad = subprocess.run(
        [*args[:2], "--input", str(tmp_path / "none.npy"), "--output", str(tmp_path / "x.npz")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode == 2 and bad.stdout.splitlines()[-1].startswith("ERROR ") and "none.npy" in bad.stdout
    assert not (tmp_path / "x.npz").exists()


def test_background_run_gives_the_in_process_result_with_progress(samples, smoke_model, smoke_predictor):
    """The runner the Slicer module polls (launcher injected: here a plain subprocess in its own session),
    with the device the module's Device choice gives and its Log panel's callback."""
    from BrainTumorSegmentationLib.background import WorkerRun

    volume = np.stack([s.grey for s in samples[:3]])
    seen, logged = [], []
    run = WorkerRun(
        volume,
        str(BUNDLE),
        device="cpu",
        on_progress=lambda fraction, name: seen.append((fraction, name)),
        on_log=logged.append,
        batch_size=2,
        ckpt_path=str(smoke_model),
        config_files=[str(SMOKE_NETWORK)],
        probability=True,
    )
    assert run.wait(300) and run.error is None and not run.cancelled
    expected_mask, expected_prob = btl.predict_volume(volume, smoke_predictor, batch_size=2, with_probability=True)
    assert np.array_equal(run.result.mask, expected_mask)
    assert np.allclose(run.result.probability, expected_prob, atol=1e-6)
    assert run.result.unusual_slices is not None and 0 <= run.result.unusual_slices <= 3
    assert [row["slice"] for row in run.result.slice_rows] == [0, 1, 2]
    assert sum(row["input_unusual"] for row in run.result.slice_rows) == run.result.unusual_slices
    assert seen[0] == (0.0, smoke_predictor.name) and seen[-1] == (1.0, smoke_predictor.name)
    assert "--force-cpu" in run.command and not os.path.exists(
        os.path.dirname(_option(run.command, "--input"))
    )  # temp files gone
    # the Log panel's lines: every line the worker wrote but PROGRESS, in order; the device reached the worker
    assert logged[0] == f"BUNDLE {smoke_predictor.name}" and logged[1] == "device: cpu"
    assert logged[-1] == f"DONE {_option(run.command, '--output')}"
    assert not any(line.startswith("PROGRESS") for line in logged)
    assert [line for line in logged if not line.startswith("BUNDLE ")] == run.log  # the rest is logged, as before


def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented child may wait unreaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _launcher_script(folder) -> str:
    """A stand-in for ``PythonSlicer``: an executable that runs the real interpreter (``python-real``) as its
    child with its own arguments and waits for it, as Slicer's launcher does."""
    path = folder / "PythonSlicer"
    path.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        "sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n"
    )
    path.chmod(0o755)
    return str(path)


#: A worker that starts a child which sleeps, says both PIDs, and sleeps too.
_SPAWNING_WORKER = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('PIDS', os.getpid(), child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_stops_the_launcher_the_worker_and_everything_it_started(tmp_path):
    """Cancel must not leave ``python-real`` or a grandchild (a data loader, a compiler...) running: a real tree,
    launcher -> worker -> child, as ``PythonSlicer worker.py`` makes it."""
    from BrainTumorSegmentationLib.background import WorkerRun

    worker = tmp_path / "spawning_worker.py"
    worker.write_text(_SPAWNING_WORKER)
    run = WorkerRun(np.zeros((2, 8, 8), np.float32), str(BUNDLE), python=_launcher_script(tmp_path), worker=str(worker))
    deadline = time.monotonic() + 60
    while not any(line.startswith("PIDS") for line in run.log) and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    pids = [int(p) for p in next(line for line in run.log if line.startswith("PIDS")).split()[1:]]
    tree = [run.process.pid, *pids]  # the launcher, the worker it runs, the worker's child
    assert len(set(tree)) == 3 and all(_alive(pid) for pid in tree)
    run.cancel()
    assert run.wait(30)
    assert run.cancelled and run.result is None
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in tree if _alive(pid)]


def test_on_windows_the_worker_starts_without_a_window_and_cancel_ends_its_process_tree(monkeypatch):
    """The Windows branch, run here with ``os.name`` set to ``"nt"`` and Windows' process calls recorded (the
    only stand-ins: the OS edge). The worker's process gets ``CREATE_NO_WINDOW`` and a hidden-window
    ``STARTUPINFO``; Cancel runs ``taskkill /F /T /PID <launcher>``, which ends ``python-real`` and its children
    too (``Popen.terminate`` would end only the launcher)."""
    from BrainTumorSegmentationLib import background

    class StartupInfo:  # subprocess.STARTUPINFO exists on Windows only
        def __init__(self):
            self.dwFlags = 0
            self.wShowWindow = 1  # SW_SHOWNORMAL

    started, ran = [], []

    class RecordingPopen:
        def __init__(self, args, **kwargs):
            started.append((args, kwargs))
            self.pid, self.returncode, self.stdout = 4242, None, io.StringIO("")  # the worker said nothing

        def poll(self):
            return self.returncode

        def kill(self):
            pytest.fail("taskkill ran: Popen.kill is only its fallback")

    def recording_run(args, **kwargs):
        ran.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    monkeypatch.setattr(subprocess, "run", recording_run)
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(sys, "platform", "win32")

    options = background.popen_options()
    assert options["creationflags"] == 0x08000000 and "start_new_session" not in options  # CREATE_NO_WINDOW
    assert options["startupinfo"].dwFlags & 0x1 and options["startupinfo"].wShowWindow == 0  # SW_HIDE
    run = background.WorkerRun(np.zeros((1, 4, 4), np.float32), str(BUNDLE), python="PythonSlicer.exe", device="cpu")
    ((args, kwargs),) = started
    assert args[0] == "PythonSlicer.exe" and args[1].endswith("worker.py")
    assert kwargs["creationflags"] == 0x08000000 and kwargs["startupinfo"].wShowWindow == 0
    assert kwargs["env"]["CUDA_VISIBLE_DEVICES"] == "-1" and kwargs["env"]["PYTHONIOENCODING"] == "utf-8"
    assert (kwargs["encoding"], kwargs["errors"], kwargs["stderr"]) == ("utf-8", "replace", subprocess.STDOUT)
    assert "start_new_session" not in kwargs
    run.cancel()
    ((command, kill_kwargs),) = ran
    assert command == ["taskkill", "/F", "/T", "/PID", "4242"]
    assert kill_kwargs["creationflags"] == 0x08000000  # taskkill opens no window either
    run.process.returncode = 1
    assert run.wait(10) and run.cancelled and run.result is None
    assert [c for c, _ in ran] == [command, command]  # and once more when the run is over: nothing outlives it


def test_background_run_reports_the_workers_error(tmp_path):
    from BrainTumorSegmentationLib.background import WorkerRun

    run = WorkerRun(np.zeros((2, 8, 8), np.float32), str(tmp_path / "no_bundle"), force_cpu=True)
    assert run.wait(120)
    assert run.result is None and not run.cancelled
    assert run.error and "no_bundle" in run.error


def test_worker_lines_reach_on_log_in_order_while_the_worker_runs(tmp_path, caplog):
    """The module's Log panel: ``on_log`` gets every line but PROGRESS, in order, while the worker still
    runs (it waits for a file the test writes only after the first line arrived); its own lines are still
    logged at info level (the Python console)."""
    import logging

    from BrainTumorSegmentationLib.background import WorkerRun

    go = tmp_path / "go"
    worker = tmp_path / "chatty_worker.py"
    worker.write_text(
        "import os, sys, time\n"
        "print('loading the model', flush=True)\n"
        "print('PROGRESS 0.25', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('BUNDLE stand-in 1.0', flush=True)\n"
        "print('a warning from a library', file=sys.stderr, flush=True)\n"
        "print('PROGRESS 0.5', flush=True)\n"
        "print('ERROR the stand-in worker stops here', flush=True)\n"
        "sys.exit(2)\n"
    )
    logged, progress = [], []
    with caplog.at_level(logging.INFO, logger="BrainTumorSegmentationLib.background"):
        run = WorkerRun(
            np.zeros((1, 4, 4), np.float32),
            str(BUNDLE),
            worker=str(worker),
            on_log=logged.append,
            on_progress=lambda f, n: progress.append(f),
        )
        deadline = time.monotonic() + 60
        # The reader thread queues one line at a time: wait for both of the worker's first lines, not the first.
        while not progress and time.monotonic() < deadline:
            assert not run.poll()  # the worker waits for the file: its first lines came while it runs
            time.sleep(0.02)
        assert logged == ["loading the model"] and progress == [0.25]
        go.write_text("")
        assert run.wait(60)
    assert logged == [
        "loading the model",
        "BUNDLE stand-in 1.0",
        "a warning from a library",
        "ERROR the stand-in worker stops here",
    ]
    assert progress == [0.25, 0.0, 0.5]  # BUNDLE restarts the bar with the model's name
    assert run.error.startswith("the stand-in worker stops here")
    assert run.log == ["loading the model", "a warning from a library"]
    console = [r.getMessage() for r in caplog.records if r.name == "BrainTumorSegmentationLib.background"]
    assert console == ["worker: loading the model", "worker: a warning from a library"]


_ECHO_WORKER = (
    "import json, os, sys\n"
    "print('ARGV ' + json.dumps(sys.argv[1:]), flush=True)\n"
    "print('CUDA_VISIBLE_DEVICES ' + os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)'), flush=True)\n"
    "print('ERROR echoed', flush=True)\n"
    "sys.exit(2)\n"
)


def test_the_device_choice_reaches_the_worker_command_line_and_environment(tmp_path):
    """What the module's Device combo box gives (auto, cpu, cuda, mps) and the older ``force_cpu`` reach the
    worker process: ``--device`` or ``--force-cpu`` on its command line, the GPUs hidden for the CPU."""
    from BrainTumorSegmentationLib.background import WorkerRun, worker_command

    worker = tmp_path / "echo_worker.py"
    worker.write_text(_ECHO_WORKER)
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
    cases = [  # (device, force_cpu) -> device options on the command line, CUDA_VISIBLE_DEVICES in the worker
        ((None, False), [], inherited),
        (("auto", False), [], inherited),
        (("cpu", False), ["--force-cpu"], "-1"),
        ((None, True), ["--force-cpu"], "-1"),
        (("cuda", True), ["--force-cpu"], "-1"),  # force_cpu wins, as for load_predictor
        ((" CUDA ", False), ["--device=cuda"], inherited),
        (("cuda:1", False), ["--device=cuda:1"], inherited),
        (("mps", False), ["--device=mps"], inherited),
    ]
    for (device, force_cpu), options, visible in cases:
        logged = []
        run = WorkerRun(
            np.zeros((1, 4, 4), np.float32),
            str(BUNDLE),
            worker=str(worker),
            device=device,
            force_cpu=force_cpu,
            on_log=logged.append,
        )
        assert run.wait(60) and run.error.startswith("echoed")
        argv = json.loads(logged[0].removeprefix("ARGV "))
        device_options = [a for a in argv if a == "--force-cpu" or a.startswith("--device=")]
        assert device_options == options, (device, force_cpu, argv)
        assert logged[1] == f"CUDA_VISIBLE_DEVICES {visible}", (device, force_cpu)
    assert worker_command("py", "in.npy", "out.npz", "b", device="mps")[-1] == "--device=mps"
    # a misspelt device stops before anything is started
    with pytest.raises(ValueError, match="'gpu 0' is not a device"):
        WorkerRun(np.zeros((1, 4, 4), np.float32), str(BUNDLE), worker=str(worker), device="gpu 0")


def _unavailable_devices() -> list[str]:
    """Devices this machine lacks whatever it has: one CUDA index past its GPUs, and MPS off a Mac with it."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [f"cuda:{count}"]
    if not torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def test_resolve_and_check_device_name_what_is_wrong(scene, samples):
    """An unavailable device is a ValueError naming it, before any model loading (in a script's process too),
    instead of torch's "Torch not compiled with CUDA enabled" or "not linked with support for mps"."""
    from BrainTumorSegmentationLib import inference

    assert [inference.resolve_device(d) for d in (None, "", "auto", " AUTO ", "cpu", "CUDA", "cuda:1", "mps")] == [
        None,
        None,
        None,
        None,
        "cpu",
        "cuda",
        "cuda:1",
        "mps",
    ]
    assert inference.resolve_device("mps", force_cpu=True) == inference.resolve_device(None, True) == "cpu"
    assert inference.resolve_device("CPU:0") == "cpu"
    for bad in ("gpu 0", "cuda:-1", "cuda:x", "cu da"):
        with pytest.raises(ValueError, match="is not a device"):
            inference.resolve_device(bad)
    inference.check_device(None)
    inference.check_device("auto")
    inference.check_device("cpu")
    with pytest.raises(ValueError, match="unknown device 'bogus'"):
        inference.check_device("bogus")
    volume = testing.add_vector_volume(scene, samples[0].rgb)
    before = scene.GetNumberOfNodes()
    for device in _unavailable_devices():
        with pytest.raises(ValueError, match=f"^device '{re.escape(device)}' .*not available"):
            inference.check_device(device)
        with pytest.raises(ValueError, match=f"device '{re.escape(device)}'"):
            btl.segment_volume(volume, bundle_dir=BUNDLE, device=device)  # what the module's process() runs
    assert scene.GetNumberOfNodes() == before


def test_an_unavailable_device_is_reported_by_the_worker_naming_it(samples, smoke_model):
    """Through the real worker (what the module's Apply runs): the run ends with an error that names the device,
    says it is not available, and carries no traceback."""
    from BrainTumorSegmentationLib.background import WorkerRun

    for device in _unavailable_devices():
        logged = []
        run = WorkerRun(
            samples[0].grey[None],
            str(BUNDLE),
            device=device,
            on_log=logged.append,
            ckpt_path=str(smoke_model),
            config_files=[str(SMOKE_NETWORK)],
        )
        assert _option(run.command, "--device") == device
        assert run.wait(300)
        assert run.result is None and not run.cancelled and run.process.returncode == 2
        first = run.error.splitlines()[0]
        assert first.startswith(f"device '{device}'") and "not available" in first, run.error
        assert logged[-1] == f"ERROR {first}"
        assert not any("Traceback" in line for line in logged)


# --------------------------------------------------------------------------------------
# Bundle info and dependencies (the module file and its .ui: test_slicer_module.py)
# --------------------------------------------------------------------------------------


def test_bundle_info(tmp_path):
    info = btl.bundle_info(BUNDLE)
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert info["is_bundle"] and info["name"] == meta["name"] and info["version"] == meta["version"]
    assert info["has_weights"] == SHIPPED_MODEL.is_file()
    assert meta["name"] in info["label"]
    assert not btl.bundle_info(tmp_path)["is_bundle"]
    assert btl.find_bundle_dir() in (str(BUNDLE), os.environ.get("BRAINSEG_BUNDLE"))


def test_dependency_checks():
    assert dependencies.version_tuple("2.13.0+cu126") == (2, 13)
    assert dependencies.version_tuple("0.4.11") == (0, 4, 11)
    assert dependencies.version_tuple("1.5rc1") == (1, 5)
    assert dependencies.version_tuple("10.0") == dependencies.version_tuple("10")
    statuses = {s.requirement.distribution: s for s in dependencies.check()}
    assert set(statuses) >= {"torch", "monai", "pytorch-ignite", "pycocotools"}
    assert "itk" not in statuses, "Slicer reads the images: the worker gets arrays"
    assert "brainseg-monai" not in statuses, "the bundle carries its own code"
    assert all(s.ok for s in statuses.values()), [s.describe() for s in statuses.values() if not s.ok]
    missing = dependencies.Status(dependencies.Requirement("no-such-dist", "no_such", "1.0"), None)
    assert not missing.ok and "not installed" in missing.describe()
    old = dependencies.Status(dependencies.Requirement("monai", "monai", "99"), "1.6.1")
    assert not old.ok and "too old" in old.describe()


def _handmade_wheel(folder, name: str, version: str) -> str:
    """A minimal pure-Python wheel, built by hand: pip installs it with no index and no build step."""
    import zipfile

    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
        z.writestr(f"{dist}.dist-info/RECORD", "".join(f"{a},,\n" for a in files) + f"{dist}.dist-info/RECORD,,\n")
    return str(path)


def test_installer_installs_what_is_missing_with_a_real_pip_and_keeps_torch_and_numpy(tmp_path, monkeypatch):
    """The Lib's installer with a real ``pip install`` subprocess into a target folder: it asks first, installs
    only what is missing, passes constraints pinning the installed torch and numpy, and checks again."""
    import importlib

    from BrainTumorSegmentationLib import installer

    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    _handmade_wheel(wheels, "brainseg-demo-dep", "1.2.0")
    pip_calls: list[list[str]] = []
    real_pip = installer.subprocess_pip(extra_args=["--no-index", "--find-links", str(wheels), "--target", str(site)])

    def pip_install(args):
        constraints = args[args.index("-c") + 1]
        pip_calls.append([*args, open(constraints).read()])
        real_pip(args)

    asked: list[str] = []
    requirements = (
        dependencies.Requirement("brainseg-demo-dep", "brainseg_demo_dep", "1.1"),
        dependencies.Requirement("numpy", "numpy", "1.24"),  # there already: not installed again
    )
    install = installer.DependencyInstaller(
        pip_install, lambda: pytest.fail("torch is there"), lambda text: asked.append(text) or True, requirements
    )
    monkeypatch.syspath_prepend(str(site))  # where the installed package is looked for afterwards
    outcome = install.run()
    assert outcome.ready and outcome.installed == ["brainseg-demo-dep>=1.1"], outcome
    assert len(asked) == 1 and "brainseg-demo-dep>=1.1 (not installed)" in asked[0] and "numpy" not in asked[0]
    ((args, pins),) = [(c[:-1], c[-1]) for c in pip_calls]
    assert args[0] == "brainseg-demo-dep>=1.1" and args[1] == "-c"
    assert f"torch=={dependencies.check()[0].installed}" in pins and f"numpy=={np.__version__}" in pins
    importlib.invalidate_caches()
    assert importlib.import_module("brainseg_demo_dep").VERSION == "1.2.0"
    # everything there: nothing asked, nothing run
    assert (
        installer.DependencyInstaller(pip_install, lambda: False, lambda text: pytest.fail(text), requirements)
        .run()
        .ready
    )
    assert len(pip_calls) == 1


def test_installer_reports_pip_failures_declines_and_a_torch_too_old(tmp_path):
    from BrainTumorSegmentationLib import installer

    absent = (dependencies.Requirement("brainseg-no-such-dist", "brainseg_no_such_dist", "1.0"),)
    failing = installer.subprocess_pip(
        extra_args=["--no-index", "--find-links", str(tmp_path), "--target", str(tmp_path)]
    )
    outcome = installer.DependencyInstaller(failing, lambda: True, requirements=absent, torch=None).run()
    assert not outcome.ready and "Installing Python packages failed" in outcome.message
    assert "brainseg-no-such-dist" in outcome.message  # pip's own words say what it could not find
    declined = installer.DependencyInstaller(lambda a: pytest.fail("asked no"), lambda: True, lambda t: False, absent)
    assert declined.run() == installer.InstallOutcome(ready=False)
    too_old = dependencies.Requirement("torch", "torch", "99")
    outcome = installer.DependencyInstaller(lambda a: None, lambda: True, requirements=(), torch=too_old).run()
    assert not outcome.ready and "PyTorch Utils" in outcome.message and "torch>=99" in outcome.message


def test_empty_result_keeps_an_empty_segment(scene, tmp_path):
    testing.check_no_tumor(scene, str(tmp_path))


def test_tumor_slice_summary_counts_slices_along_the_segmented_axis(scene, samples):
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = mask[3, 0, 0] = 1
    assert btl.tumor_slice_summary(mask) == "tumor found on 2 of 4 slices"
    assert btl.tumor_slice_summary(mask, axis=0) == "tumor found on 2 of 6 slices"  # I: numpy's last axis
    assert btl.tumor_slice_summary(np.zeros_like(mask)) == "no tumor found on any of 4 slices"
    assert btl.tumor_slice_summary(mask[1:2]) == "tumor found"
    assert btl.tumor_slice_summary(np.zeros((1, 5, 6))) == "no tumor found"
    with pytest.raises(ValueError, match="expected a non-empty"):
        btl.tumor_slice_summary(np.zeros((5, 6)))
    # on a real segmentation read back from the scene, as the module's status line does: the
    # stand-in marks the brightest 2% of a slice, so a constant slice has no tumor
    greys = [samples[0].grey, np.full_like(samples[0].grey, 7.0), samples[1].grey]
    volume = testing.add_scalar_volume(scene, np.stack(greys))
    segmentation = btl.segment_volume(volume, predictor=testing.IntensityPredictor())
    assert btl.tumor_slice_summary(btl.segment_mask_array(segmentation)) == "tumor found on 2 of 3 slices"


def test_the_segmentation_and_probability_go_under_the_volumes_parent_transform(scene):
    import vtk

    volume = testing.add_scalar_volume(scene, np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12))
    registration = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)  # 25 mm to the right
    registration.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(registration.GetID())
    segmentation = btl.segment_volume(volume, predictor=testing.IntensityPredictor(), output_probability=True)
    assert segmentation.GetTransformNodeID() == registration.GetID()
    assert btl.probability_node_of(segmentation).GetTransformNodeID() == registration.GetID()
    # the volume taken out from under the transform: a rerun into the same nodes follows it
    volume.SetAndObserveTransformNodeID(None)
    btl.segment_volume(volume, segmentation, predictor=testing.IntensityPredictor(), output_probability=True)
    assert segmentation.GetTransformNodeID() is None
    assert btl.probability_node_of(segmentation).GetTransformNodeID() is None


def test_slices_unlike_the_training_data_are_counted_on_the_segmentation(scene, samples, smoke_predictor):
    normal = samples[0].grey
    inverted = [np.where(s.grey > 20, 255.0 - s.grey, 0.0) for s in samples[1:4]]
    volume = testing.add_scalar_volume(scene, np.stack([normal, *inverted]).astype(np.float32))
    segmentation = btl.segment_volume(volume, predictor=smoke_predictor)
    count = int(segmentation.GetAttribute(btl.UNUSUAL_SLICES_ATTRIBUTE))
    assert 2 <= count <= 4  # the inverted slices (the input check flags about 9 in 10 of them)
    assert btl.unusual_slice_note(segmentation) == (
        f"; {count} slices look unlike the model's training data (T1 contrast MRI): check the result"
    )
    plain = btl.segment_volume(testing.add_scalar_volume(scene, normal[None]), predictor=testing.IntensityPredictor())
    assert plain.GetAttribute(btl.UNUSUAL_SLICES_ATTRIBUTE) is None and btl.unusual_slice_note(plain) == ""


def test_each_slice_gets_a_row_in_the_per_slice_table_and_a_rerun_refills_it(scene, samples, tumor_predictor):
    """The table a person sorts to find the slices to look at: the bundle's per-slice report, one row per slice."""
    from scripts.tumor_report import SLICE_REPORT_FIELDS
    from scripts.verdict import NO_TUMOR, POSSIBLE_TUMOR, TUMOR

    predictor, _ = tumor_predictor
    volume = testing.add_scalar_volume(scene, np.stack([s.grey for s in samples[:4]]).astype(np.float32))
    segmentation = btl.segment_volume(volume, predictor=predictor)
    table = btl.slice_table_node_of(segmentation)
    assert table is not None and table.GetName() == f"{volume.GetName()} tumor per slice"
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == list(SLICE_REPORT_FIELDS) and table.GetNumberOfRows() == 4
    assert table.GetTable().GetColumnByName("slice").GetClassName() == "vtkIntArray"  # sorted as numbers
    assert table.GetTable().GetColumnByName("tumor_score").GetClassName() == "vtkDoubleArray"
    labels = btl.segmentation_label_map(segmentation)
    for k in range(4):  # each row says what the segments show on its slice
        plane = labels[k]
        said = TUMOR if (plane == 1).any() else POSSIBLE_TUMOR if (plane == 2).any() else NO_TUMOR
        assert table.GetCellText(k, columns.index("slice")) == str(k)
        assert table.GetCellText(k, columns.index("verdict")) == said, k
    unusual = sum(table.GetCellText(k, columns.index("input_unusual")) == "True" for k in range(4))
    assert unusual == int(segmentation.GetAttribute(btl.UNUSUAL_SLICES_ATTRIBUTE))
    tables = scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems()
    btl.segment_volume(volume, segmentation, predictor=predictor)  # again into the same segmentation
    assert btl.slice_table_node_of(segmentation) is table and table.GetNumberOfRows() == 4
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == tables
    # a stand-in without the bundle's per-slice details makes no table, nor does a 2D image (its verdict is all)
    plain = btl.segment_volume(volume, predictor=testing.IntensityPredictor())
    assert btl.slice_table_node_of(plain) is None
    image = btl.segment_volume(testing.add_scalar_volume(scene, samples[0].grey[None]), predictor=predictor)
    assert btl.slice_table_node_of(image) is None


def test_another_volumes_result_is_never_written_over(scene, samples):
    """Patient A's segmentation, then patient B's volume with it as the output: refused, naming both, A's result
    unchanged; :func:`output_segmentation_for` says to make a new one, and B's result goes there."""
    greys = np.stack([s.grey for s in samples[:2]]).astype(np.float32)
    patient_a = testing.add_scalar_volume(scene, greys, "patient A")
    patient_b = testing.add_scalar_volume(scene, greys[::-1].copy(), "patient B")
    mask = np.zeros(greys.shape, np.uint8)
    mask[:, 100:140, 100:140] = 1
    result_a = btl.apply_prediction(patient_a, mask)
    assert btl.source_volume_of(result_a) is patient_a
    assert btl.output_segmentation_for(patient_a, result_a) is result_a  # a rerun of A: the same node
    assert btl.output_segmentation_for(patient_b, result_a) is None
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="'patient A brain tumor'.* holds the result of the volume 'patient A'"):
        btl.apply_prediction(patient_b, np.zeros(greys.shape, np.uint8), segmentation_node=result_a)
    with pytest.raises(ValueError, match="holds the result of the volume 'patient A'"):
        btl.segment_volume(patient_b, result_a, predictor=testing.IntensityPredictor())
    assert scene.GetNumberOfNodes() == nodes and np.array_equal(btl.segmentation_label_map(result_a), mask)
    result_b = btl.apply_prediction(patient_b, mask, segmentation_node=btl.output_segmentation_for(patient_b, result_a))
    assert result_b is not result_a and result_b.GetName() == "patient B brain tumor"
    assert btl.source_volume_of(result_b) is patient_b
    # a segmentation made elsewhere (Segment Editor), or one whose volume is gone, is written into
    drawn = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn by hand")
    assert btl.output_segmentation_for(patient_b, drawn) is drawn
    scene.RemoveNode(patient_a)
    assert btl.output_segmentation_for(patient_b, result_a) is result_a


def test_a_rerun_sets_aside_what_it_does_not_replace(scene, samples):
    """A rerun without a probability map, or of a volume that became one slice, no longer points at the earlier
    run's probability volume or per-slice table: they stay in the scene, named as an earlier run's."""
    from scripts.tumor_report import slice_rows

    greys = np.stack([s.grey for s in samples[:3]]).astype(np.float32)
    volume = testing.add_scalar_volume(scene, greys, "mri")
    mask = np.zeros(greys.shape, np.uint8)
    reports = [{"index": k, "tumor_score": 0.0, "components": [], "input_unusual": False} for k in range(3)]
    rows = slice_rows(reports)
    segmentation = btl.apply_prediction(volume, mask, np.zeros(greys.shape, np.float32), slice_rows=rows)
    probability, table = btl.probability_node_of(segmentation), btl.slice_table_node_of(segmentation)
    assert probability is not None and table is not None
    btl.apply_prediction(volume, mask, segmentation_node=segmentation, slice_rows=rows)  # no probability this time
    assert btl.probability_node_of(segmentation) is None and probability.GetScene() is scene
    assert probability.GetName() == "mri tumor probability (earlier run)"
    assert btl.slice_table_node_of(segmentation) is table  # refilled, as before
    slicer.util.updateVolumeFromArray(volume, greys[:1])  # now a single slice: its verdict is all, no table
    btl.apply_prediction(volume, mask[:1], segmentation_node=segmentation, slice_rows=rows[:1])
    assert btl.slice_table_node_of(segmentation) is None and table.GetName() == "mri tumor per slice (earlier run)"


def test_per_slice_rows_that_do_not_fit_are_refused_before_the_scene_changes(scene, samples):
    from scripts.tumor_report import slice_rows

    volume = testing.add_scalar_volume(scene, np.stack([s.grey for s in samples[:2]]).astype(np.float32))
    mask = np.zeros((2, *samples[0].grey.shape), np.uint8)
    reports = [{"index": k, "tumor_score": 0.0, "components": [], "input_unusual": False} for k in range(3)]
    nodes = scene.GetNumberOfNodes()
    for rows, said in (
        ([], "a non-empty list"),
        ([{"slice": 0}, {"verdict": "tumor"}], "the fields"),
        (["x"], ""),
        (slice_rows(reports), r"3 rows, but the volume has 2 x \d+ x \d+ voxels"),  # another volume's report
    ):
        with pytest.raises(ValueError, match=f"slice_rows: .*{said}"):
            btl.apply_prediction(volume, mask, slice_rows=rows)
        assert scene.GetNumberOfNodes() == nodes
    for count, rows in ((3, slice_rows(reports[:2])), (-1, None), (1.5, None), (True, None), (10**6, None)):
        with pytest.raises(ValueError, match=f"unusual_slices: {count!r} is not a count of slices from 0 to"):
            btl.apply_prediction(volume, mask, unusual_slices=count, slice_rows=rows)
        assert scene.GetNumberOfNodes() == nodes
    segmentation = btl.apply_prediction(volume, mask, unusual_slices=np.int64(2), slice_rows=slice_rows(reports[:2]))
    assert segmentation.GetAttribute(btl.UNUSUAL_SLICES_ATTRIBUTE) == "2"


def test_an_installed_extension_finds_the_bundle_it_carries(tmp_path):
    """The layout CMakeLists.txt installs: <qt-scripted-modules>/{BrainTumorSegmentation.py,
    BrainTumorSegmentationLib/, BrainTumorSegmentationBundle/}; found without importing anything heavy."""
    from BrainTumorSegmentationLib import inference

    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert (
        "set(BUNDLE_FOLDER ${MODULE_NAME}Bundle)" in cmake
        and inference.INSTALLED_BUNDLE == "BrainTumorSegmentationBundle"
    )
    for item in re.search(r"set\(BUNDLE_ITEMS ([^)]*)\)", cmake).group(1).split():
        assert (BUNDLE / item).exists(), item
    modules = tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    modules.mkdir(parents=True)
    shutil.copytree(LIB_DIR, modules / "BrainTumorSegmentationLib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BUNDLE, modules / "BrainTumorSegmentationBundle", ignore=shutil.ignore_patterns("eval"))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import BrainTumorSegmentationLib as L;"
        "print(L.find_bundle_dir()); print(L.bundle_info()['has_weights']);"
        "print(sorted(m for m in ('torch', 'monai', 'brainseg_monai') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "BRAINSEG_BUNDLE"}
    proc = subprocess.run([sys.executable, "-c", code, str(modules)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == [str(modules / "BrainTumorSegmentationBundle"), "True", "[]"]


def test_a_segmentation_made_elsewhere_gets_a_display_node_and_the_dicom_master_list_terminology(scene, samples):
    """The output selector's "Create new" adds a bare segmentation node: the result must still show."""
    volume = testing.add_vector_volume(scene, samples[0].rgb)
    bare = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "made by the selector")
    assert bare.GetDisplayNode() is None
    btl.segment_volume(volume, bare, predictor=testing.IntensityPredictor())
    assert bare.GetDisplayNode() is not None and bare.GetDisplayNode().GetVisibility()
    segment = bare.GetSegmentation().GetSegment(bare.GetSegmentation().GetNthSegmentID(0))
    assert testing.segment_tag(segment, "TerminologyEntry").startswith(
        "Segmentation category and type - DICOM master list~"
    )


def test_worker_output_that_is_not_utf8_is_read_on_and_logged(tmp_path, caplog):
    """A byte no code page decodes (a Windows console's output) must not stop the reader thread."""
    import logging

    from BrainTumorSegmentationLib.background import WorkerRun

    worker = tmp_path / "odd_bytes_worker.py"
    worker.write_text(
        "import sys\n"
        "sys.stdout.buffer.write(b'caf\\xe9 \\xff\\xfe warning from a library\\n'); sys.stdout.flush()\n"
        "print('PROGRESS 0.5', flush=True)\n"
        "print('ERROR the stand-in worker stops here', flush=True)\n"
        "sys.exit(2)\n"
    )
    progress = []
    with caplog.at_level(logging.INFO, logger="BrainTumorSegmentationLib.background"):
        run = WorkerRun(
            np.zeros((1, 4, 4), np.float32),
            str(BUNDLE),
            worker=str(worker),
            on_progress=lambda f, n: progress.append(f),
        )
        assert run.wait(60)
    assert progress == [0.5]
    assert run.error.startswith("the stand-in worker stops here")
    assert any("warning from a library" in line and "\ufffd" in line for line in run.log)
    assert any("worker: caf" in r.getMessage() for r in caplog.records)


def test_a_sagittal_volume_is_segmented_as_its_axial_slices(scene, samples, predictor):
    testing.check_sagittal_volume(scene, predictor, [s.grey for s in samples[:3]])


def test_the_worker_cuts_a_sagittal_volume_as_the_lib_does(tmp_path, samples, smoke_model, smoke_predictor):
    """The module hands the worker the volume's directions and spacing: the background run cuts the axial slices
    too, and gives them to the network with square pixels."""
    from BrainTumorSegmentationLib.background import WorkerRun, worker_command

    h, w = samples[0].grey.shape[:2]
    axial = np.stack([s.grey[h // 2 - 24 : h // 2 + 24, w // 2 - 20 : w // 2 + 20] for s in samples[:3]])
    sagittal = np.ascontiguousarray(np.transpose(axial.astype(np.float32), (2, 0, 1)))
    directions = [[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # RAS: I posterior, J superior, K left
    # 3 mm front to back (I), 0.5 mm across: the axial slices' pixels are six times as long as wide
    spacing, axial_spacing = (3.0, 0.5, 0.5), (0.5, 3.0, 0.5)
    run = WorkerRun(
        sagittal,
        str(BUNDLE),
        device="cpu",
        batch_size=2,
        ckpt_path=str(smoke_model),
        config_files=[str(SMOKE_NETWORK)],
        axis=btl.resolve_axis(sagittal.shape, None, directions),
        probability=True,
        direction=directions,
        spacing=spacing,
    )
    assert run.wait(300) and run.error is None, run.error
    assert _option(run.command, "--axis") == "1"
    assert "--direction=0.0,0.0,-1.0,-1.0,0.0,0.0,0.0,1.0,0.0" in run.command
    assert "--spacing=3.0,0.5,0.5" in run.command
    reports: list = []
    expected, probability = btl.predict_volume(
        axial, smoke_predictor, batch_size=2, with_probability=True, slice_reports=reports, spacing=axial_spacing
    )
    assert np.array_equal(run.result.mask, np.transpose(expected, (2, 0, 1)))
    assert np.allclose(run.result.probability, np.transpose(probability, (2, 0, 1)), atol=1e-6)
    assert [row["verdict"] for row in run.result.slice_rows] == [r["verdict"] for r in reports]
    # the spacing made a difference (the squeezed planes as they lie give another probability): it reached the loop
    squeezed = btl.predict_volume(axial, smoke_predictor, batch_size=2, with_probability=True)[1]
    assert not np.allclose(squeezed, probability, atol=1e-3)
    # the numbers are read as numbers only: anything else is refused before the worker starts its work
    for bad in ("1,0,0,0,1,0,0,0", "__import__('os'),0,0,0,1,0,0,0,1"):
        command = worker_command(sys.executable, str(tmp_path / "in.npy"), str(tmp_path / "out.npz"), str(BUNDLE))
        proc = subprocess.run([*command, "--direction", bad], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "--direction: expected nine comma-separated numbers" in proc.stderr
        assert not (tmp_path / "out.npz").exists()


def test_the_worker_reads_the_spacing_as_three_positive_numbers_only(tmp_path, capsys):
    """``--spacing`` is three comma-separated numbers, I,J,K, read with ``float`` (never evaluated); anything else
    is an argparse error (exit code 2) naming the option and what is wrong, before the worker loads anything."""
    from BrainTumorSegmentationLib import worker
    from BrainTumorSegmentationLib.background import worker_command

    command = worker_command("python", "in.npy", "out.npz", str(BUNDLE), spacing=np.array([0.5, 3, 1e-3]))
    assert command[-1] == "--spacing=0.5,3.0,0.001"
    assert not any(a.startswith("--spacing") for a in worker_command("python", "in.npy", "out.npz", str(BUNDLE)))
    parser = worker.build_parser()
    required = ["--input", "in.npy", "--output", "out.npz"]
    assert parser.parse_args(required).spacing is None
    assert parser.parse_args([*command[2:], "--force-cpu"]).spacing == (0.5, 3.0, 0.001)
    assert parser.parse_args([*required, "--spacing", " 0.7, 0.7 ,3"]).spacing == (0.7, 0.7, 3.0)
    for bad, why in [
        ("0.5,3.0", "expected three comma-separated numbers (I,J,K), got 2"),
        ("0.5,3.0,0.5,1", "expected three comma-separated numbers (I,J,K), got 4"),
        ("0.5,,0.5", "expected three comma-separated numbers (I,J,K), got '0.5,,0.5'"),
        ("__import__('os'),1,1", "expected three comma-separated numbers (I,J,K), got \"__import__('os'),1,1\""),
        ("0.5,0,0.5", "expected three positive numbers (I,J,K), got '0.5,0,0.5'"),
        ("0.5,-3,0.5", "expected three positive numbers (I,J,K), got '0.5,-3,0.5'"),
        ("nan,1,1", "expected three positive numbers (I,J,K), got 'nan,1,1'"),
        ("1,inf,1", "expected three positive numbers (I,J,K), got '1,inf,1'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*required, "--spacing", bad])
        assert exit_info.value.code == 2
        assert f"argument --spacing: {why}" in capsys.readouterr().err
    # the worker itself: refused before anything is read or written
    proc = subprocess.run(
        [sys.executable, str(LIB_DIR / "worker.py"), "--input", str(tmp_path / "in.npy")]
        + ["--output", str(tmp_path / "out.npz"), "--spacing", "1,1,-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--spacing: expected three positive numbers" in proc.stderr
    assert not (tmp_path / "out.npz").exists()


def test_every_value_the_worker_is_given_reaches_it_as_given_even_one_that_starts_with_a_minus():
    """Each option and its value are one argument, so a direction, a path or a folder that starts with "-" is
    read as the value it is, never as an option (``--direction -1.0,...`` was refused as a missing value)."""
    from BrainTumorSegmentationLib import worker
    from BrainTumorSegmentationLib.background import worker_command

    direction = -np.eye(3)
    command = worker_command(
        "python",
        "-scans/in.npy",
        "-scans/out.npz",
        "-bundle",
        batch_size=3,
        ckpt_path="-weights.pt",
        config_files=["-a.json", "-b.json"],
        axis=1,
        device="cuda:1",
        direction=direction,
        spacing=(0.5, 3.0, 0.5),
    )
    args = worker.build_parser().parse_args(command[2:])
    assert (args.input, args.output, args.bundle_dir, args.ckpt_path) == (
        "-scans/in.npy",
        "-scans/out.npz",
        "-bundle",
        "-weights.pt",
    )
    assert (args.config_file, args.axis, args.batch_size, args.device) == (["-a.json", "-b.json"], "1", 3, "cuda:1")
    assert np.array_equal(args.direction, direction) and args.spacing == (0.5, 3.0, 0.5)


def test_a_volume_of_thick_coronal_slices_is_segmented_with_square_pixels(scene, samples, tumor_predictor):
    """A real volume node of 3 mm coronal slices (spacing 0.5, 3.0, 0.5): its axial slices reach the network with
    square pixels through segment_volume, and, with the trained model, get the verdicts of the same head with
    square pixels."""
    predictor, trained = tumor_predictor
    labels, square_labels = testing.check_rectangular_pixels(scene, predictor, [s.grey for s in samples[:3]], trained)
    assert labels.shape[1] * 6 == square_labels.shape[1]
    if trained:  # the shipped model finds the tumors of these three slices (a check that says something)
        assert (labels == 1).any(axis=(1, 2)).all()


def test_results_never_replace_another_image_move_a_users_segments_or_read_other_labels_as_none(scene, tmp_path):
    """What the Lib writes goes where it belongs, or is refused naming the nodes, with the scene as it was: a
    probability output that holds an image (another patient's MRI, another volume's probability) is not
    written over; a segmentation under another transform keeps its own segments where they are; a 0/255 mask
    is not two empty segments ("no tumor"); NaN voxels and a zero spacing name the volume and the slice."""
    grey = np.zeros((3, 16, 16), np.float32)
    grey[:, 4:12, 4:12] = 100.0
    volume_a = testing.add_scalar_volume(scene, grey, name="patient A")
    volume_b = testing.add_scalar_volume(scene, grey + 1, name="patient B")
    mask = np.zeros(grey.shape, np.uint8)
    mask[1, 5:9, 5:9] = 1
    probability = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    result_a = btl.apply_prediction(volume_a, mask, probability)
    probability_a = btl.probability_node_of(result_a)
    before = slicer.util.arrayFromVolume(volume_a).copy()
    nodes = scene.GetNumberOfNodes()

    for target, words in ((probability_a, "'patient A tumor probability'"), (volume_a, "'patient A'")):
        with pytest.raises(ValueError, match=f"the probability volume {words} .*holds an image that is not the tumor"):
            btl.apply_prediction(volume_b, mask, probability, probability_node=target)
    assert np.array_equal(slicer.util.arrayFromVolume(volume_a), before)
    assert btl.apply_prediction(volume_a, mask, probability, result_a, probability_node=probability_a) is result_a
    assert btl.probability_node_of(result_a) is probability_a  # a rerun writes its own probability again

    for bad, shown in ((mask * 255, "255"), (probability, "0.1, 0.9")):
        with pytest.raises(ValueError, match=f"other values than the labels 0 .*: {shown}; a 0/255 mask"):
            btl.apply_prediction(volume_b, bad)
        with pytest.raises(ValueError, match="other values than the labels"):
            btl.tumor_slice_summary(bad, bundle_dir=BUNDLE)
    assert scene.GetNumberOfNodes() == nodes

    drawn = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my outlines")
    drawn.GetSegmentation().AddEmptySegment("ventricles", "Ventricles")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    drawn.SetAndObserveTransformNodeID(shift.GetID())
    with pytest.raises(ValueError, match="'my outlines' .*lies under another transform .*'Ventricles'"):
        btl.apply_prediction(volume_b, mask, segmentation_node=drawn)
    assert drawn.GetTransformNodeID() == shift.GetID()
    volume_b.SetAndObserveTransformNodeID(shift.GetID())  # both under one transform: written into
    assert btl.apply_prediction(volume_b, mask, segmentation_node=drawn) is drawn

    broken = grey.copy()
    broken[2, 3, 3] = np.nan
    broken[2, 3, 4] = np.inf
    nan_volume = testing.add_scalar_volume(scene, broken, name="patient 7 T1c")
    with pytest.raises(ValueError, match=r"'patient 7 T1c' .* has 2 NaN or infinite voxel\(s\), on 1 of its 3 K "):
        btl.volume_array(nan_volume)
    flat = testing.add_scalar_volume(scene, grey, name="flat", spacing=(1.0, 1.0, 1.0))
    flat.SetSpacing(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"'flat' .* has the spacing \[0.0, 1.0, 1.0\] \(I, J, K\): each must be"):
        btl.volume_spacing(flat)


def test_batch_size_is_a_whole_number_for_every_way_a_run_starts_and_a_probability_node_given_is_filled(scene):
    """2.7 was cut to 2 for the background worker and refused in process; a probability_node given without
    output_probability was left empty."""
    from BrainTumorSegmentationLib import background

    for bad in (2.7, 0, -1, True, "4"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {re.escape(repr(bad))}"):
            background.worker_command("python", "in.npy", "out.npz", str(BUNDLE), batch_size=bad)
    assert "--batch-size=3" in background.worker_command(
        "python", "in.npy", "out.npz", str(BUNDLE), batch_size=np.int64(3)
    )
    volume = testing.add_scalar_volume(scene, np.full((1, 32, 32), 50.0, np.float32), name="flat")
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "where the probability goes")

    class Nothing:
        def predict_arrays(self, images, with_probability=False, batch_size=8):
            masks = [np.zeros(np.asarray(i).shape[:2], np.uint8) for i in images]
            return [(m, np.full(m.shape, 0.25, np.float32)) for m in masks] if with_probability else masks

    result = btl.segment_volume(volume, predictor=Nothing(), probability_node=target)
    assert btl.probability_node_of(result) is target
    assert np.allclose(slicer.util.arrayFromVolume(target), 0.25)
