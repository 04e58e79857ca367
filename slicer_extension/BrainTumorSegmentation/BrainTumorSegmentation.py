"""3D Slicer module: segment brain tumors on MRI slices with the brainseg-monai MONAI bundle.

Only Slicer glue lives here (user interface, settings, dialogs, and the hooks the Lib's
dependency installer and background runner are given: Slicer's pip, PyTorch Utils, the
launcher, progress and cancel). The processing is in the Qt-free package
``BrainTumorSegmentationLib`` next to this file, usable without the application
(see its ``segment_volume``) and tested with the PyPI package ``slicer-core``.

The per-scene choices live in a parameter node (``slicer.parameterNodeWrapper``), saved with the
scene; the bundle folder, a path on this computer, stays in the user settings with its history.
No postponed evaluation of type hints in this file: the wrapper reads the parameter node class's
hints as objects (``typing.get_type_hints``), so they must also work on Slicer 5.8's Python 3.9
(``Optional``, not ``X | None``).

Supported: Slicer 5.8 or newer (``MINIMUM_SLICER_VERSION``), checked when this file is imported. An
older Slicer lacks what the module is built on (Slicer 5.0 has no ``slicer.parameterNodeWrapper``;
enum fields such as ``SliceAxis`` and ``Device`` came to it in 2023), so there only the part of
this file that any Slicer runs is executed: the module registers, and its help, its panel and its
self-test say which Slicer it needs (``UNSUPPORTED_MESSAGE``). The imports and the parameter node
class are in ``if SLICER_SUPPORTED:`` blocks.
"""

import enum
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Optional

import ctk
import numpy as np
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: The oldest Slicer (major, minor) the module runs on: the 5.8 series, Python 3.9.
MINIMUM_SLICER_VERSION = (5, 8)


def _runningSlicerVersion():
    """The running Slicer's ``(major, minor)``, or None where the application does not say.

    ``slicer.app.majorVersion`` and ``minorVersion`` are properties (ints) of Slicer's application
    (qSlicerCoreApplication), the version of Slicer itself also in a custom application built on it;
    text that reads as a whole number is taken too.
    """
    app = getattr(slicer, "app", None)
    try:
        return int(app.majorVersion), int(app.minorVersion)
    except (AttributeError, TypeError, ValueError):
        return None


def _unsupportedMessage(version):
    """What an older Slicer shows: the Slicer needed, and this one's version (``slicer.app.applicationVersion``,
    ``5.6.2``, when it is Slicer's ``version``; else ``major.minor``)."""
    needed = "This module needs 3D Slicer {}.{} or newer".format(*MINIMUM_SLICER_VERSION)
    if version is None:
        return f"{needed}; this Slicer does not report its version."
    running = f"{version[0]}.{version[1]}"
    full = getattr(getattr(slicer, "app", None), "applicationVersion", None)
    if isinstance(full, str) and (full == running or full.startswith(running + ".")):
        running = full
    return f"{needed}; this is {running}."


SLICER_VERSION = _runningSlicerVersion()
#: Whether this Slicer runs the module; a Slicer that does not report its version is not taken as one.
SLICER_SUPPORTED = SLICER_VERSION is not None and SLICER_VERSION >= MINIMUM_SLICER_VERSION
#: What an older Slicer shows instead of the module (help text, panel, self-test); None where it runs.
UNSUPPORTED_MESSAGE = None if SLICER_SUPPORTED else _unsupportedMessage(SLICER_VERSION)

# Only where the module runs: the wrapper (missing in Slicer 5.0) and the Lib (Python 3.9; Slicer 4 had 3.6).
if SLICER_SUPPORTED:
    from typing import Annotated

    import BrainTumorSegmentationLib as btl
    from BrainTumorSegmentationLib import background, dependencies, inference, installer
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

SETTINGS_PREFIX = "BrainTumorSegmentation/"
#: Volume classes derived from vtkMRMLScalarVolumeNode that cannot be segmented: the input selector hides
#: them (its hideChildNodeTypes in the .ui) and the default input skips them.
HIDDEN_INPUT_TYPES = (
    "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLDiffusionWeightedVolumeNode",
    "vtkMRMLDiffusionTensorVolumeNode",
    "vtkMRMLMultiVolumeNode",
)


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
        helpText = """
Segments brain tumors on 2D MRI slices (a JPEG/PNG loaded as a volume) or on 3D MRI volumes,
slice by slice, with a 2D U-Net from the brainseg-monai MONAI bundle. The result is a
segmentation with one "Brain tumor" segment (standard terminology: Neoplasm of the brain);
optionally also the tumor probability as a volume.
The model was trained on 2D T1 contrast-enhanced slices with box-shaped labels: it is a
research tool, not for clinical use.
"""
        # an older Slicer: the help starts with the Slicer needed, and the sample data stay unregistered
        self.parent.helpText = helpText if SLICER_SUPPORTED else UNSUPPORTED_MESSAGE + "\n" + helpText
        self.parent.acknowledgementText = """
Built on MONAI and PyTorch. Training data: Brain Tumor Image Dataset (Roboflow/Kaggle, CC BY 4.0),
slices of the figshare brain tumor dataset (Jun Cheng, 2017, CC BY 4.0).
"""
        if SLICER_SUPPORTED:
            slicer.app.connect("startupCompleted()", registerSampleData)
        else:
            logging.warning(f"Brain Tumor Segmentation: {UNSUPPORTED_MESSAGE}")


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
# Parameter node
#


class _Choice(enum.Enum):
    """A combo box choice: each member's value is ``(what the Lib takes, the combo box text)``.

    The parameter node saves a member by its name; the combo box shows :meth:`label` (Slicer's
    QComboBox connector for enums calls it).
    """

    def label(self):
        """The combo box text."""
        return self.value[1]

    @property
    def choice(self):
        """What the Lib takes for this member."""
        return self.value[0]


class SliceAxis(_Choice):
    """The IJK axis 3D volumes are cut along (``axis`` of ``segment_volume``)."""

    AUTO = (None, "Auto")
    K = (2, "K")
    J = (1, "J")
    I = (0, "I")  # noqa: E741 - the axis is called I


class Device(_Choice):
    """Where the model runs (``device`` of the Lib); CPU also hides the GPUs from the worker."""

    AUTO = ("auto", "Auto (CUDA GPU when available)")
    CPU = ("cpu", "CPU")
    CUDA = ("cuda", "CUDA (GPU)")
    MPS = ("mps", "MPS (Apple GPU)")


if SLICER_SUPPORTED:  # the wrapper and its enum fields: see the module docstring

    @parameterNodeWrapper
    class BrainTumorSegmentationParameterNode:
        """The module's choices in a scene, bound to the widgets whose ``SlicerParameterName`` names them.

        Attributes:
            inputVolume: the MRI to segment (vector volumes derive from scalar volumes).
            outputSegmentation: the segmentation to write; None creates one.
            outputProbability: also write the tumor probability as a volume.
            axis: the slice axis of 3D volumes.
            batchSize: slices per network call (the spin box's range).
            device: where the model runs.
        """

        inputVolume: vtkMRMLScalarVolumeNode
        outputSegmentation: vtkMRMLSegmentationNode
        outputProbability: bool = False
        axis: SliceAxis = SliceAxis.AUTO
        batchSize: Annotated[int, WithinRange(1, 256)] = 8
        device: Device = Device.AUTO


#
# Widget
#


class BrainTumorSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module's panel: the parameter node's widgets, the bundle folder, Apply and Cancel, progress, log."""

    _parameterNode: "Optional[BrainTumorSegmentationParameterNode]"  # a string: only a supported Slicer has the class

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # observes the scene and the parameter node
        self.logic = None
        self.run = None
        self._installing = False  # Python packages being installed: Apply waits
        self._started = 0.0
        self._axis = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        if not SLICER_SUPPORTED:  # the panel says which Slicer is needed; nothing else is set up
            label = qt.QLabel(UNSUPPORTED_MESSAGE)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainTumorSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainTumorSegmentationLogic()

        # the bundle folder is a path on this computer: user settings (with a history), not the scene
        self.ui.bundlePathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.bundlePathLineEdit.settingKey = SETTINGS_PREFIX + "BundleDirHistory"
        self.ui.bundlePathLineEdit.currentPath = slicer.app.userSettings().value(SETTINGS_PREFIX + "BundleDir", "")

        self.ui.bundlePathLineEdit.currentPathChanged.connect(self.updateBundleStatus)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.progressBar.setVisible(False)
        self.updateBundleStatus()
        self.initializeParameterNode()  # also needed when the module is reloaded

    def cleanup(self):
        if self.run is not None:
            self.run.onProgress = self.run.onFinished = self.run.onLog = None  # the widget is going away
            self.run.cancel()
            self.run = None
        self.removeObservers()

    def enter(self):
        if SLICER_SUPPORTED:
            self.initializeParameterNode()

    def exit(self):
        # the widgets stop following the parameter node until the module is shown again
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        if self.run is not None:
            self.run.cancel()
        self.setParameterNode(None)  # the parameter node goes with the scene

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # parameter node

    def initializeParameterNode(self):
        """Show the scene's parameter node (a new one starts from the user's last choices); pick an input."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = firstInputVolume()
            if volume is not None:
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, inputParameterNode):
        """Bind the widgets to ``inputParameterNode`` (None: to nothing) and follow its changes."""
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            # each bound widget names its parameter in the .ui's dynamic property "SlicerParameterName"
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def saveSettings(self):
        """Remember the bundle folder, and this scene's choices as the defaults of new scenes."""
        settings = slicer.app.userSettings()
        settings.setValue(SETTINGS_PREFIX + "BundleDir", self.ui.bundlePathLineEdit.currentPath)
        self.ui.bundlePathLineEdit.addCurrentPathToHistory()
        if self._parameterNode is not None:
            self.logic.saveUserDefaults(self._parameterNode)

    # state

    def bundleDir(self):
        return self.ui.bundlePathLineEdit.currentPath or None

    def updateBundleStatus(self, *args):
        info = btl.bundle_info(self.bundleDir())
        self.ui.statusLabel.text = f"Model: {info['label']}"
        self.ui.statusLabel.toolTip = info["path"]

    def updateButtons(self, *args):
        running = self.run is not None or self._installing
        volume = self._parameterNode.inputVolume if self._parameterNode is not None else None
        self.ui.applyButton.enabled = volume is not None and not running
        if self._installing:
            self.ui.applyButton.toolTip = "Python packages are being installed"
        elif running:
            self.ui.applyButton.toolTip = "Segmentation is running"
        else:
            self.ui.applyButton.toolTip = "Segment the brain tumor" if volume is not None else "Select the input volume"
        self.ui.cancelButton.enabled = self.run is not None
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.bundlePathLineEdit):
            widget.enabled = not running

    # actions

    def onApply(self):
        self.ui.logTextEdit.clear()  # the panel shows the last run only
        self.saveSettings()
        parameters = self._parameterNode
        volume = parameters.inputVolume if parameters is not None else None
        try:
            btl.check_volume_node(volume)
            info = btl.bundle_info(self.bundleDir())
            if not info["is_bundle"] or not info["has_weights"]:
                raise ValueError(f"{info['label']}\nChoose the bundle folder (with models/model.pt) in 'Model bundle'.")
            # the chosen bundle decides the axis once: the worker slices along it and the summary counts along it
            axis = self.logic.sliceAxis(volume, parameters.axis.choice, self.bundleDir())
        except (ValueError, ImportError) as e:
            slicer.util.errorDisplay(f"Cannot segment: {e}")
            return
        # the install can take minutes, and Slicer's pip runner keeps the panel live: no second Apply meanwhile
        self._installing = True
        self.updateButtons()
        self.ui.statusLabel.text = "Checking Python packages..."
        try:
            ready = self.logic.setupPythonRequirements(self.bundleDir())
        finally:
            self._installing = False
            self.updateButtons()
        if not ready:
            self.ui.statusLabel.text = "Python packages are not ready: nothing was segmented."
            return
        output = btl.output_segmentation_for(volume, parameters.outputSegmentation)
        if output is None and parameters.outputSegmentation is not None:
            self.onLog(
                f"'{parameters.outputSegmentation.GetName()}' holds the result of another volume: the result of "
                f"'{volume.GetName()}' goes to a new segmentation."
            )
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = "Starting the model..."
        self._started = time.time()
        self._axis = axis
        try:
            self.run = self.logic.startProcessing(
                volume,
                output,
                bundleDir=self.bundleDir(),
                device=parameters.device.choice,
                outputProbability=parameters.outputProbability,
                axis=self._axis,
                batchSize=parameters.batchSize,
                onProgress=self.onProgress,
                onFinished=self.onFinished,
                onLog=self.onLog,
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

    def onLog(self, line):
        """Add a line of the run's output to the Log panel (the Lib logs the worker's own lines too)."""
        self.ui.logTextEdit.appendPlainText(line)

    def onFinished(self, segmentationNode, error, cancelled):
        self.run = None
        self.ui.progressBar.setVisible(False)
        self.updateButtons()
        if cancelled:
            self.ui.statusLabel.text = "Cancelled: nothing was changed."
            self.onLog("Cancelled: nothing was changed.")
            return
        if error:
            reason = error.strip().splitlines()[0] if error.strip() else "no reason given"
            self.ui.statusLabel.text = f"Failed: {reason}"
            self.onLog(f"Failed: {reason}")  # the details are in the message box
            slicer.util.errorDisplay(f"Brain tumor segmentation failed: {reason}", detailedText=error)
            return
        if self._parameterNode is not None:
            self._parameterNode.outputSegmentation = segmentationNode  # the selector follows
        what = self.logic.tumorSummary(segmentationNode, self._axis)
        self.ui.statusLabel.text = f"Done in {time.time() - self._started:.1f} s: {what}."
        self.onLog(self.ui.statusLabel.text)
        table = btl.slice_table_node_of(segmentationNode)
        if table is not None:  # which slices to look at, sortable by verdict or score
            self.onLog(f"One row per slice: the table '{table.GetName()}' (Tables module).")


def firstInputVolume():
    """The input a parameter node without one starts with, as in Slicer's module template.

    Returns:
        the scene's first scalar volume node (vector volumes included) of a kind the input selector shows
        (not one of ``HIDDEN_INPUT_TYPES``), or None.
    """
    for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
        if not any(node.IsA(hidden) for hidden in HIDDEN_INPUT_TYPES):
            return node
    return None


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

    # parameter node and user settings

    def getParameterNode(self):
        """The scene's parameter node, created if missing.

        One the scene did not have yet starts from the user's last choices (:meth:`applyUserDefaults`),
        so a new scene needs no setting up again; a loaded scene keeps its own.

        Returns:
            a :class:`BrainTumorSegmentationParameterNode` around the scene's ``vtkMRMLScriptedModuleNode``.
        """
        node = ScriptedLoadableModuleLogic.getParameterNode(self)
        new = not node.HasParameter("device")  # asked before wrapping: the wrapper writes the missing defaults
        parameters = BrainTumorSegmentationParameterNode(node)
        if new:
            self.applyUserDefaults(parameters)
        return parameters

    @staticmethod
    def applyUserDefaults(parameters):
        """Set the device, probability output, axis and batch size last used (user settings).

        Args:
            parameters: a :class:`BrainTumorSegmentationParameterNode`; a value the settings lack, or
                cannot give, keeps its default.
        """
        settings = slicer.app.userSettings()

        def setting(key, default):
            return settings.value(SETTINGS_PREFIX + key, default)

        with slicer.util.NodeModify(parameters):
            device = Device.__members__.get(str(setting("Device", "")))
            if device is None and slicer.util.toBool(setting("ForceCPU", False)):
                device = Device.CPU  # the "Force CPU" check box of earlier versions
            if device is not None:
                parameters.device = device
            parameters.outputProbability = slicer.util.toBool(setting("OutputProbability", False))
            axes = list(SliceAxis)
            axis = _settingInt(setting("Axis", 0))  # the combo box index, as earlier versions saved it too
            if axis is not None and 0 <= axis < len(axes):
                parameters.axis = axes[axis]
            batchSize = _settingInt(setting("BatchSize", parameters.batchSize))
            if batchSize is not None:
                try:
                    parameters.batchSize = batchSize
                except ValueError:  # outside the parameter's range: the default stays
                    pass

    @staticmethod
    def saveUserDefaults(parameters):
        """Save the choices of ``parameters`` (but the nodes) as the defaults of new parameter nodes.

        Args:
            parameters: a :class:`BrainTumorSegmentationParameterNode`.
        """
        settings = slicer.app.userSettings()
        settings.setValue(SETTINGS_PREFIX + "Device", parameters.device.name)
        settings.setValue(SETTINGS_PREFIX + "OutputProbability", parameters.outputProbability)
        settings.setValue(SETTINGS_PREFIX + "Axis", list(SliceAxis).index(parameters.axis))
        settings.setValue(SETTINGS_PREFIX + "BatchSize", parameters.batchSize)
        settings.remove(SETTINGS_PREFIX + "ForceCPU")  # "Device" replaces it

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

    @staticmethod
    def sliceAxis(inputVolume, axis=None, bundleDir=None):
        """The IJK axis a run slices ``inputVolume`` along, as the chosen bundle's slice loop decides it.

        The bundle's ``scripts/volumes.py`` (``resolve_axis``) picks the axis for Auto: the one its
        IJK-to-RAS directions put nearest foot to head, where the axial slices lie; asking the chosen
        bundle, not the default one, and passing the answer to the worker and to :meth:`tumorSummary` keeps
        the status line counting along the axis that was segmented.

        Args:
            inputVolume: the volume to segment.
            axis: None (Auto), 0 (I), 1 (J), 2 (K) or ``"I"``/``"J"``/``"K"``.
            bundleDir: the bundle folder chosen in the panel (None: ``btl.find_bundle_dir``'s).

        Returns:
            0 (I), 1 (J) or 2 (K).

        Raises:
            ValueError: ``axis`` is not an axis.
            ImportError: the folder holds no bundle code (``scripts/``).
        """
        bundle = btl.find_bundle_dir(bundleDir)
        volumes = inference.bundle_module("volumes", bundle)
        loaded = os.path.dirname(os.path.dirname(os.path.abspath(volumes.__file__)))
        if os.path.normcase(loaded) != os.path.normcase(os.path.abspath(bundle)):
            # Python keeps the bundle code loaded first (module "scripts"): say so rather than hide it
            logging.warning(
                f"BrainTumorSegmentation: the slice axis follows the bundle code loaded first in this session "
                f"({loaded}), not {bundle}'s; restart Slicer to use that bundle's code in Slicer's process"
            )
        shape = slicer.util.arrayFromVolume(inputVolume).shape
        # the directions, where the bundle's loop takes them (bundles before 0.6.4 cut along K); the spacing
        # does not choose the axis
        direction = inference.slice_loop_geometry(volumes, direction=btl.volume_direction(inputVolume))
        return volumes.resolve_axis(shape, axis, **direction)

    @staticmethod
    def tumorSummary(segmentationNode, axis):
        """The status line's outcome: "tumor found on 7 of 24 slices; possible tumor on 2 more" and the
        unusual-slice note, if any.

        Args:
            segmentationNode: the run's result (its "Brain tumor" and "Possible tumor" segments).
            axis: the axis the volume was segmented along, as :meth:`sliceAxis` gave it.
        """
        labels = btl.segmentation_label_map(segmentationNode)
        return btl.tumor_slice_summary(labels, axis) + btl.unusual_slice_note(segmentationNode)

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
        device=None,
        **options,
    ):
        """Segment in this process (blocks the application). Returns the segmentation node.

        ``device``: None or ``"auto"`` (CUDA when available), ``"cpu"`` (as ``forceCPU``), ``"cuda"``,
        ``"cuda:<index>"`` or ``"mps"``; one this machine lacks raises a ``ValueError`` naming it.
        """
        return btl.segment_volume(
            inputVolume,
            outputSegmentation,
            bundleDir,
            device=inference.resolve_device(device),  # "auto" is None: no device option
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
        device=None,
        onLog=None,
    ):
        """Segment in a background ``PythonSlicer`` process. Returns a :class:`BackgroundSegmentation`.

        ``onProgress(fraction, message)``, ``onLog(line)`` (the worker's output lines) and
        ``onFinished(segmentationNode, error, cancelled)`` are called on the main thread. ``device`` as
        for :meth:`process`; one this machine lacks ends the run with an error naming it.
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
            device=device,
            onLog=onLog,
        )


def _settingInt(value):
    """A user setting as an int (QSettings gives text from the settings file), or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class BackgroundSegmentation:
    """One background run (``BrainTumorSegmentationLib.background.WorkerRun``), polled by a Qt timer.

    The Lib starts the ``PythonSlicer`` worker (its own process group on POSIX, no console window on
    Windows; ``_slicerLauncher``) and reads its protocol;
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
        device=None,
        onLog=None,
    ):
        btl.check_volume_node(volumeNode)
        self.volumeNodeID = volumeNode.GetID()
        self.segmentationNodeID = segmentationNode.GetID() if segmentationNode is not None else None
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.onLog = onLog
        python = shutil.which("PythonSlicer")
        if not python:
            raise RuntimeError("PythonSlicer (Slicer's Python launcher) was not found")
        self.run = background.WorkerRun(
            btl.volume_array(volumeNode),
            btl.find_bundle_dir(bundleDir),
            python=python,
            launcher=_slicerLauncher,
            force_cpu=forceCPU,
            device=device,
            on_progress=self._progress,
            on_log=self._log,
            batch_size=batchSize,
            ckpt_path=ckptPath,
            config_files=tuple(configFiles),
            axis=axis,
            probability=outputProbability,
            direction=btl.volume_direction(volumeNode),  # the worker cuts the axial slices as Auto chose them
            spacing=btl.volume_spacing(volumeNode),  # and gives planes with rectangular pixels square ones
        )
        command = " ".join(self.run.command)
        logging.info("BrainTumorSegmentation: " + command)
        self._log(f"Started: {command}")
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

    def _log(self, line):
        if self.onLog is not None:
            self.onLog(line)

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
                        slice_rows=result.slice_rows,
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
    """Start the worker with Slicer's startup environment, as ``slicer.util.launchConsoleProcess`` does.

    Not through ``launchConsoleProcess`` itself: it decodes the output with the system code page and starts
    the process in Slicer's own process group, so Cancel could not stop ``python-real`` and what it started.
    The Lib's ``background.start_process`` hides the console window on Windows as that function does
    (and more: ``CREATE_NO_WINDOW``), and starts a session of its own on POSIX, so that
    ``background.kill_process_tree`` ends the whole tree (``taskkill /F /T`` on Windows).
    """
    startup = slicer.util.startupEnvironment() if hasattr(slicer.util, "startupEnvironment") else None
    env = {**(startup if startup is not None else os.environ), **(environment or {})}
    return background.start_process(command, env)


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
        if not SLICER_SUPPORTED:  # nothing to test on an older Slicer: say why
            self.delayDisplay(UNSUPPORTED_MESSAGE)
            return
        self.setUp()
        self.test_ParameterNode()
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

    def test_ParameterNode(self):
        """The parameter node keeps the choices in the scene, and the .ui's widgets follow it both ways."""
        self.delayDisplay("Checking the parameter node and its widgets")
        parameters = BrainTumorSegmentationLogic().getParameterNode()
        parameters.device = Device.CPU
        parameters.axis = SliceAxis.J
        parameters.batchSize = 4
        node = parameters.parameterNode
        self.assertEqual([node.GetParameter(name) for name in ("device", "axis", "batchSize")], ["CPU", "J", "4"])
        with self.assertRaises(ValueError):
            parameters.batchSize = 1000  # outside the spin box's range
        folder = os.path.dirname(os.path.abspath(__file__))
        uiWidget = slicer.util.loadUI(os.path.join(folder, "Resources", "UI", "BrainTumorSegmentation.ui"))
        uiWidget.setMRMLScene(slicer.mrmlScene)
        ui = slicer.util.childWidgetVariables(uiWidget)
        tag = parameters.connectGui(ui)
        try:
            self.assertEqual([ui.deviceComboBox.currentText, ui.axisComboBox.currentText], ["CPU", "J"])
            self.assertEqual(ui.batchSizeSpinBox.value, 4)
            ui.deviceComboBox.currentIndex = list(Device).index(Device.MPS)
            self.assertIs(parameters.device, Device.MPS)
            rgb = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
            labels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
            selector = ui.inputVolumeSelector
            shown = [selector.nodeFromIndex(index) for index in range(selector.nodeCount())]
            self.assertIn(rgb, shown)
            self.assertNotIn(labels, shown)
            self.assertIs(firstInputVolume(), rgb)
            parameters.inputVolume = rgb
            self.assertIs(selector.currentNode(), rgb)
        finally:
            parameters.disconnectGui(tag)
            uiWidget.deleteLater()
        self.delayDisplay("Parameter node test passed")

    def test_BackgroundProcess(self):
        testing = _sceneChecks()

        if not self._modelReady():
            self.delayDisplay("Skipping the background process test: brainseg-monai or the weights are missing")
            return
        sample = self._samples()[0]
        volume = testing.add_vector_volume(slicer.mrmlScene, sample.rgb, "background test")
        progress, log = [], []
        run = BrainTumorSegmentationLogic().startProcessing(
            volume,
            device="cpu",
            onProgress=lambda f, m=None: progress.append(f),
            onFinished=lambda *args: progress.append(args),
            onLog=log.append,
        )
        run.wait()
        segmentation, error, cancelled = progress[-1]
        self.assertIsNone(error)
        self.assertFalse(cancelled)
        testing.check_segment_metadata(segmentation)
        expected = btl.load_predictor(force_cpu=True).predict_array(sample.rgb)
        self.assertTrue(np.array_equal(btl.segment_mask_array(segmentation)[0], expected))
        self.assertIn(1.0, progress)
        self.assertTrue(log[0].startswith("Started: ") and "--force-cpu" in log[0])
        # the volume's geometry reached the worker (the JPEG's directions start with -1.0: one argument each)
        self.assertIn("--direction=-1.0,", log[0])
        self.assertIn("--spacing=", log[0])
        self.assertIn("device: cpu", log)
        self.delayDisplay("Background process test passed")
