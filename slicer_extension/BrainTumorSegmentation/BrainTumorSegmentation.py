"""3D Slicer module: segment brain tumors on MRI slices with the brainseg-monai MONAI bundle.

Only Slicer glue lives here (user interface, settings, dialogs, and the hooks the Lib's
dependency installer and background runner are given: Slicer's pip, PyTorch Utils, the
launcher, progress and cancel). The processing is in the Qt-free package
``BrainTumorSegmentationLib`` next to this file, usable without the application
(see its ``segment_volume``) and tested with the PyPI package ``slicer-core``.
"""

import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import BrainTumorSegmentationLib as btl
import ctk
import numpy as np
import qt
import slicer
import vtk  # noqa: F401 - keeps Slicer's module template imports
from BrainTumorSegmentationLib import background, dependencies, installer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SETTINGS_PREFIX = "BrainTumorSegmentation/"
AXIS_CHOICES = (None, 2, 1, 0)  # combo box index -> IJK axis ("Auto", "K", "J", "I")


#
# Module
#


class BrainTumorSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Brain Tumor Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []  # PyTorch Utils (PyTorch extension) is used when present, not required
        self.parent.contributors = ["brainseg-monai contributors"]
        self.parent.helpText = """
Segments brain tumors on 2D MRI slices (a JPEG/PNG loaded as a volume) or on 3D MRI volumes,
slice by slice, with a 2D U-Net from the brainseg-monai MONAI bundle. The result is a
segmentation with one "Brain tumor" segment (standard terminology: Neoplasm of the brain);
optionally also the tumor probability as a volume.
The model was trained on 2D T1 contrast-enhanced slices with box-shaped labels: it is a
research tool, not for clinical use.
"""
        self.parent.acknowledgementText = """
Built on MONAI and PyTorch. Training data: Brain Tumor Image Dataset (Roboflow/Kaggle, CC BY 4.0),
slices of the figshare brain tumor dataset (Jun Cheng, 2017, CC BY 4.0).
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def registerSampleData():
    """Two of the bundle's sample slices in the Sample Data module (category "Brain tumor segmentation").

    They are files the bundle carries (``sample_data/valid``, CC BY 4.0, see its NOTICE.md), so
    nothing is downloaded from the network.
    """
    try:
        import SampleData
    except ImportError:  # a Slicer without the Sample Data module
        return
    folder = os.path.join(btl.find_bundle_dir(), "sample_data", "valid")
    if not os.path.isdir(folder):
        return
    icon = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Icons", "BrainTumorSegmentation.png")
    for index, name in enumerate(sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))[:2], start=1):
        path = os.path.join(folder, name)
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="Brain tumor segmentation",
            sampleName=f"BrainTumorSlice{index}",
            uris=pathlib.Path(path).as_uri(),
            fileNames=name,
            nodeNames=f"BrainTumorSlice{index}",
            thumbnailFileName=icon,
            loadFileType="VolumeFile",
        )


#
# Widget
#


class BrainTumorSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self._started = 0.0

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainTumorSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainTumorSegmentationLogic()

        self.ui.bundlePathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.bundlePathLineEdit.settingKey = SETTINGS_PREFIX + "BundleDirHistory"
        self.restoreSettings()

        self.ui.inputVolumeSelector.currentNodeChanged.connect(self.updateButtons)
        self.ui.bundlePathLineEdit.currentPathChanged.connect(self.updateBundleStatus)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)

        self.ui.progressBar.setVisible(False)
        self.updateBundleStatus()
        self.updateButtons()

    def cleanup(self):
        if self.run is not None:
            self.run.onProgress = self.run.onFinished = None  # the widget is going away
            self.run.cancel()
            self.run = None
        self.removeObservers()

    def onSceneStartClose(self, caller, event):
        if self.run is not None:
            self.run.cancel()

    # settings

    def restoreSettings(self):
        settings = slicer.app.userSettings()
        self.ui.bundlePathLineEdit.currentPath = settings.value(SETTINGS_PREFIX + "BundleDir", "")
        self.ui.forceCpuCheckBox.checked = slicer.util.toBool(settings.value(SETTINGS_PREFIX + "ForceCPU", False))
        self.ui.probabilityCheckBox.checked = slicer.util.toBool(
            settings.value(SETTINGS_PREFIX + "OutputProbability", False)
        )
        self.ui.axisComboBox.currentIndex = int(settings.value(SETTINGS_PREFIX + "Axis", 0))
        self.ui.batchSizeSpinBox.value = int(settings.value(SETTINGS_PREFIX + "BatchSize", 8))

    def saveSettings(self):
        settings = slicer.app.userSettings()
        settings.setValue(SETTINGS_PREFIX + "BundleDir", self.ui.bundlePathLineEdit.currentPath)
        settings.setValue(SETTINGS_PREFIX + "ForceCPU", self.ui.forceCpuCheckBox.checked)
        settings.setValue(SETTINGS_PREFIX + "OutputProbability", self.ui.probabilityCheckBox.checked)
        settings.setValue(SETTINGS_PREFIX + "Axis", self.ui.axisComboBox.currentIndex)
        settings.setValue(SETTINGS_PREFIX + "BatchSize", self.ui.batchSizeSpinBox.value)
        self.ui.bundlePathLineEdit.addCurrentPathToHistory()

    # state

    def bundleDir(self):
        return self.ui.bundlePathLineEdit.currentPath or None

    def updateBundleStatus(self, *args):
        info = btl.bundle_info(self.bundleDir())
        self.ui.statusLabel.text = f"Model: {info['label']}"
        self.ui.statusLabel.toolTip = info["path"]

    def updateButtons(self, *args):
        running = self.run is not None
        self.ui.applyButton.enabled = self.ui.inputVolumeSelector.currentNode() is not None and not running
        self.ui.applyButton.toolTip = "Segment the brain tumor" if not running else "Segmentation is running"
        self.ui.cancelButton.enabled = running
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.bundlePathLineEdit):
            widget.enabled = not running

    # actions

    def onApply(self):
        self.saveSettings()
        volume = self.ui.inputVolumeSelector.currentNode()
        try:
            btl.check_volume_node(volume)
            info = btl.bundle_info(self.bundleDir())
            if not info["is_bundle"] or not info["has_weights"]:
                raise ValueError(f"{info['label']}\nChoose the bundle folder (with models/model.pt) in 'Model bundle'.")
        except ValueError as e:
            slicer.util.errorDisplay(f"Cannot segment: {e}")
            return
        if not self.logic.setupPythonRequirements(self.bundleDir()):
            self.ui.statusLabel.text = "Python packages are not ready (see the message shown)."
            return
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = "Starting the model..."
        self._started = time.time()
        self._axis = AXIS_CHOICES[self.ui.axisComboBox.currentIndex]
        try:
            self.run = self.logic.startProcessing(
                volume,
                self.ui.outputSegmentationSelector.currentNode(),
                bundleDir=self.bundleDir(),
                forceCPU=self.ui.forceCpuCheckBox.checked,
                outputProbability=self.ui.probabilityCheckBox.checked,
                axis=self._axis,
                batchSize=self.ui.batchSizeSpinBox.value,
                onProgress=self.onProgress,
                onFinished=self.onFinished,
            )
        except Exception as e:
            self.ui.progressBar.setVisible(False)
            slicer.util.errorDisplay(f"Cannot start the segmentation: {e}")
            logging.exception("BrainTumorSegmentation start failed")
        self.updateButtons()

    def onCancel(self):
        if self.run is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self.run.cancel()

    def onProgress(self, fraction, message=None):
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        if message:
            self.ui.statusLabel.text = message

    def onFinished(self, segmentationNode, error, cancelled):
        self.run = None
        self.ui.progressBar.setVisible(False)
        self.updateButtons()
        if cancelled:
            self.ui.statusLabel.text = "Cancelled: nothing was changed."
            return
        if error:
            self.ui.statusLabel.text = "Failed (see the error message)."
            slicer.util.errorDisplay("Brain tumor segmentation failed.", detailedText=error)
            return
        self.ui.outputSegmentationSelector.setCurrentNode(segmentationNode)
        what = btl.tumor_slice_summary(btl.segment_mask_array(segmentationNode), self._axis)
        what += btl.unusual_slice_note(segmentationNode)
        self.ui.statusLabel.text = f"Done in {time.time() - self._started:.1f} s: {what}."


#
# Logic
#


class BrainTumorSegmentationLogic(ScriptedLoadableModuleLogic):
    """Slicer side of the processing: Python packages, and running ``BrainTumorSegmentationLib``.

    ``process`` runs in Slicer's own process (blocking; for scripts and tests);
    ``startProcessing`` runs the model in a background ``PythonSlicer`` process with progress
    and cancel, then writes the result into the scene on the main thread.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # Python packages

    def setupPythonRequirements(self, bundleDir=None, askConfirmation=True):
        """Install what is missing (after confirmation). Returns True when everything is ready.

        The plan, the pins that keep Slicer's torch and numpy, and the checks are the Lib's
        (``installer.DependencyInstaller``); this method only supplies Slicer's pip, PyTorch Utils
        and the dialogs.
        """
        ask = askConfirmation and not slicer.app.commandOptions().testingEnabled

        def confirm(text):
            return not ask or slicer.util.confirmOkCancelDisplay(text, windowTitle="Install Python packages")

        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            outcome = installer.DependencyInstaller(slicer.util.pip_install, self._installTorch, confirm).run()
        finally:
            slicer.app.restoreOverrideCursor()
        if outcome.message:
            slicer.util.errorDisplay(outcome.message)
        if outcome.restart and slicer.util.confirmOkCancelDisplay(
            f"Updated {', '.join(outcome.restart)}, already loaded by Slicer. Slicer must be restarted before "
            "segmenting. Restart now?",
            windowTitle="Restart Slicer",
        ):
            slicer.util.restart()
        return outcome.ready

    def _installTorch(self):
        try:
            import PyTorchUtils

            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        except ImportError:
            torchLogic = None
        if torchLogic is not None:
            return (
                torchLogic.installTorch(
                    askConfirmation=False, torchVersionRequirement=f">={dependencies.TORCH.minimum}"
                )
                is not None
            )
        if not slicer.util.confirmOkCancelDisplay(
            "The PyTorch extension (PyTorch Utils module) is not installed: it picks the PyTorch build for your GPU. "
            "Install it from the Extensions Manager and restart Slicer for GPU support, or continue to install "
            "PyTorch with pip (default build).",
            windowTitle="PyTorch",
        ):
            return False
        slicer.util.pip_install([dependencies.TORCH.spec])
        return True

    # processing

    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        bundleDir=None,
        forceCPU=False,
        outputProbability=False,
        axis=None,
        batchSize=8,
        progress=None,
        cancel=None,
        **options,
    ):
        """Segment in this process (blocks the application). Returns the segmentation node."""
        return btl.segment_volume(
            inputVolume,
            outputSegmentation,
            bundleDir,
            force_cpu=forceCPU,
            output_probability=outputProbability,
            axis=axis,
            batch_size=batchSize,
            progress=progress,
            cancel=cancel,
            **options,
        )

    def startProcessing(
        self,
        inputVolume,
        outputSegmentation=None,
        bundleDir=None,
        forceCPU=False,
        outputProbability=False,
        axis=None,
        batchSize=8,
        onProgress=None,
        onFinished=None,
        ckptPath=None,
        configFiles=(),
    ):
        """Segment in a background ``PythonSlicer`` process. Returns a :class:`BackgroundSegmentation`.

        ``onProgress(fraction, message)`` and ``onFinished(segmentationNode, error, cancelled)`` are
        called on the main thread.
        """
        return BackgroundSegmentation(
            inputVolume,
            outputSegmentation,
            bundleDir,
            forceCPU,
            outputProbability,
            axis,
            batchSize,
            onProgress,
            onFinished,
            ckptPath,
            configFiles,
        )


class BackgroundSegmentation:
    """One background run (``BrainTumorSegmentationLib.background.WorkerRun``), polled by a Qt timer.

    The Lib starts the ``PythonSlicer`` worker in its own process group and reads its protocol;
    this class only polls it from the main thread and applies a successful result to the scene
    (``btl.apply_prediction``), so Cancel (which stops the worker and everything it started)
    leaves the scene unchanged.
    """

    def __init__(
        self,
        volumeNode,
        segmentationNode,
        bundleDir,
        forceCPU,
        outputProbability,
        axis,
        batchSize,
        onProgress,
        onFinished,
        ckptPath=None,
        configFiles=(),
    ):
        btl.check_volume_node(volumeNode)
        self.volumeNodeID = volumeNode.GetID()
        self.segmentationNodeID = segmentationNode.GetID() if segmentationNode is not None else None
        self.onProgress = onProgress
        self.onFinished = onFinished
        python = shutil.which("PythonSlicer")
        if not python:
            raise RuntimeError("PythonSlicer (Slicer's Python launcher) was not found")
        self.run = background.WorkerRun(
            btl.volume_array(volumeNode),
            btl.find_bundle_dir(bundleDir),
            python=python,
            launcher=_slicerLauncher,
            force_cpu=forceCPU,
            on_progress=self._progress,
            batch_size=batchSize,
            ckpt_path=ckptPath,
            config_files=tuple(configFiles),
            axis=axis,
            probability=outputProbability,
        )
        logging.info("BrainTumorSegmentation: " + " ".join(self.run.command))
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._poll)
        self.timer.start()

    @property
    def finished(self):
        return self.run.finished

    @property
    def cancelled(self):
        return self.run.cancelled

    def cancel(self):
        """Stop the worker and its children; the scene is not changed."""
        self.run.cancel()

    def _progress(self, fraction, bundleName):
        if self.onProgress is not None:
            self.onProgress(fraction, f"Segmenting with {bundleName}..." if bundleName else None)

    def _poll(self):
        if not self.run.poll():
            return
        self.timer.stop()
        segmentation, error = None, self.run.error
        try:
            if self.run.result is not None:
                volume = slicer.mrmlScene.GetNodeByID(self.volumeNodeID)
                if volume is None:
                    error = "The input volume was removed while it was being segmented."
                else:
                    outputNode = (
                        slicer.mrmlScene.GetNodeByID(self.segmentationNodeID) if self.segmentationNodeID else None
                    )
                    result = self.run.result
                    segmentation = btl.apply_prediction(
                        volume,
                        result.mask,
                        result.probability,
                        outputNode,
                        source=self.run.bundle_name,
                        unusual_slices=result.unusual_slices,
                    )
        except Exception as e:
            logging.exception("BrainTumorSegmentation: loading the result failed")
            error = str(e)
        if self.onFinished is not None:
            self.onFinished(segmentation, error, self.run.cancelled)

    def wait(self, timeoutSeconds=600):
        """Block (processing Qt events) until the run has finished. For scripts and tests."""
        end = time.time() + timeoutSeconds
        while self.timer.isActive() and time.time() < end:
            slicer.app.processEvents()
            time.sleep(0.05)
        if self.timer.isActive():
            self.cancel()
            raise TimeoutError("the background segmentation did not finish in time")


def _slicerLauncher(command, environment=None):
    """Start the worker with Slicer's startup environment (as launchConsoleProcess does), in its own session."""
    startup = slicer.util.startupEnvironment() if hasattr(slicer.util, "startupEnvironment") else None
    env = {**(startup if startup is not None else os.environ), **(environment or {})}
    return subprocess.Popen(
        list(command),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )


#
# Test
#


def _sceneChecks():
    """``Testing/Python/scene_checks.py`` (the checks tests/test_slicer_lib.py runs), from the source tree.

    They are test code and do not ship with an installed extension: None there.
    """
    import importlib
    import sys

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Testing", "Python")
    if not os.path.isfile(os.path.join(folder, "scene_checks.py")):
        return None
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("scene_checks")


class BrainTumorSegmentationTest(ScriptedLoadableModuleTest):
    """Runs ``Testing/Python/scene_checks.py`` (the same checks as tests/test_slicer_lib.py) in Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        testing = _sceneChecks()
        if testing is None:
            self.delayDisplay("The scene checks are in the extension's source tree (Testing/Python): run from there")
            return
        self.setUp()
        self.test_SegmentVolume()
        self.setUp()
        self.test_BackgroundProcess()

    def _samples(self):
        testing = _sceneChecks()

        split = os.path.join(btl.find_bundle_dir(), "sample_data", "valid")
        try:
            return testing.read_samples(split)
        except (ImportError, OSError) as e:
            logging.info(f"Sample images not usable ({e}); using synthetic images")
            return testing.synthetic_samples()

    @staticmethod
    def _modelReady():
        """The default bundle has weights and every Python package is installed."""
        bundle = btl.find_bundle_dir()
        return btl.bundle_info(bundle)["has_weights"] and all(s.ok for s in dependencies.check())

    def _predictor(self):
        """The bundle's trained model when it can be loaded, else the numpy stand-in."""
        testing = _sceneChecks()

        if self._modelReady():
            return btl.load_predictor(force_cpu=True), True
        logging.info(
            "brainseg-monai/torch or the trained weights are missing: checking the scene logic with a stand-in"
        )
        return testing.IntensityPredictor(), False

    def test_SegmentVolume(self):
        testing = _sceneChecks()

        self.delayDisplay("Checking segment_volume on the scene")
        predictor, trained = self._predictor()
        with tempfile.TemporaryDirectory() as tmp:
            testing.run_all_checks(slicer.mrmlScene, predictor, self._samples(), tmp, trained, log=logging.info)
        self.delayDisplay("segment_volume checks passed")

    def test_BackgroundProcess(self):
        testing = _sceneChecks()

        if not self._modelReady():
            self.delayDisplay("Skipping the background process test: brainseg-monai or the weights are missing")
            return
        sample = self._samples()[0]
        volume = testing.add_vector_volume(slicer.mrmlScene, sample.rgb, "background test")
        progress = []
        run = BrainTumorSegmentationLogic().startProcessing(
            volume,
            forceCPU=True,
            onProgress=lambda f, m=None: progress.append(f),
            onFinished=lambda *args: progress.append(args),
        )
        run.wait()
        segmentation, error, cancelled = progress[-1]
        self.assertIsNone(error)
        self.assertFalse(cancelled)
        testing.check_segment_metadata(segmentation)
        expected = btl.load_predictor(force_cpu=True).predict_array(sample.rgb)
        self.assertTrue(np.array_equal(btl.segment_mask_array(segmentation)[0], expected))
        self.assertIn(1.0, progress)
        self.delayDisplay("Background process test passed")
