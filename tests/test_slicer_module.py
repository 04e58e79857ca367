"""The Slicer module file (slicer_extension/.../BrainTumorSegmentation.py) and its .ui, checked without Slicer.

No Slicer application installs here, so the module file is checked statically (it parses for
Python 3.9, its ``self.ui`` names exist in the .ui, CMake lists its files, the parameter node's fields
match the .ui's widgets) and loaded with stand-ins for what only a running Slicer has, to check
which Slicer versions it runs on. The Lib it uses is tested on a real MRML scene in test_slicer_lib.py.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import re
import sys
import types
import typing
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the MRML tests")

from conftest import BUNDLE, REPO  # noqa: E402

MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
MODULE_FILE = MODULE_DIR / "BrainTumorSegmentation.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "BrainTumorSegmentation.ui"
LIB_DIR = MODULE_DIR / "BrainTumorSegmentationLib"
for _folder in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import BrainTumorSegmentationLib as btl  # noqa: E402
import slicer  # noqa: E402

_TYPE_NAMES = {
    "str",
    "int",
    "float",
    "bool",
    "bytes",
    "list",
    "dict",
    "tuple",
    "set",
    "Callable",
    "Sequence",
    "Mapping",
}


def _runtime_type_unions(path, annotations_evaluated: bool = False) -> list[str]:
    """``X | Y`` of types evaluated at run time: a TypeError on Python 3.9.

    Annotations are skipped (postponed with ``from __future__ import annotations``) unless
    ``annotations_evaluated``: in a file without that import they are evaluated too.
    """
    tree = ast.parse(path.read_text())
    in_annotations = set()
    for node in ast.walk(tree) if not annotations_evaluated else ():
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            annotations = [a.annotation for a in args if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in filter(None, annotations):
            in_annotations.update(id(n) for n in ast.walk(annotation))

    def typelike(n):
        if isinstance(n, ast.Constant) and n.value is None:
            return True
        if isinstance(n, ast.Subscript):
            n = n.value
        return isinstance(n, ast.Name) and n.id in _TYPE_NAMES

    return [
        f"{path.name}:{n.lineno}"
        for n in ast.walk(tree)
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) and id(n) not in in_annotations
        if typelike(n.left) or typelike(n.right)
    ]


def test_code_slicer_imports_runs_on_python_3_9():
    """Slicer 5.8 ships Python 3.9: the module, its Lib and the bundle code the Lib loads build no ``X | Y``
    type at run time (annotations are strings there, ``from __future__ import annotations``). The module
    file itself must not postpone them: ``slicer.parameterNodeWrapper`` reads its parameter node class's
    annotations as objects (``typing.get_type_hints``), so none of its annotations may use ``X | Y``."""
    files = [MODULE_FILE, *LIB_DIR.glob("*.py"), *(BUNDLE / "scripts").glob("*.py")]
    files += [*(MODULE_DIR / "Testing" / "Python").glob("*.py")]
    for path in files:
        source = path.read_text()
        ast.parse(source, feature_version=(3, 9))
        if path == MODULE_FILE:
            assert "from __future__ import annotations" not in source
        elif path.parent != MODULE_DIR and path.name != "__init__.py" or "annotations" in source:
            assert "from __future__ import annotations" in source, path.name
    unions = [
        where for path in files for where in _runtime_type_unions(path, annotations_evaluated=path == MODULE_FILE)
    ]
    assert unions == []
    # the check sees annotations when asked to: a parameter node field written with X | Y is caught
    probe = MODULE_DIR / "Testing" / "Python" / "scene_checks.py"
    assert _runtime_type_unions(probe) == [] and _runtime_type_unions(probe, annotations_evaluated=True) != []


def test_module_files_fit_together():
    """Without Slicer: the module parses, every self.ui.<name> exists in the .ui, CMake lists every file."""
    source = (MODULE_DIR / "BrainTumorSegmentation.py").read_text()
    tree = ast.parse(source)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {
        "BrainTumorSegmentation",
        "BrainTumorSegmentationWidget",
        "BrainTumorSegmentationLogic",
        "BrainTumorSegmentationTest",
    } <= classes
    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "BrainTumorSegmentation.ui").getroot()
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used <= names, f"widgets used but not in the .ui: {used - names}"
    classes_in_ui = {w.get("class") for w in ui.iter("widget")}
    assert {
        "qMRMLNodeComboBox",
        "ctkPathLineEdit",
        "QCheckBox",
        "QComboBox",
        "QProgressBar",
        "QPushButton",
    } <= classes_in_ui
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "BrainTumorSegmentation.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in LIB_DIR.glob("*.py"):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} is not installed by CMakeLists.txt"
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest" in cmake
    top = (REPO / "CMakeLists.txt").read_text()  # the root: the Extensions Index builds from there
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DEPENDS", "Slicer_EXTENSION_CPACK"):
        assert key in top
    assert "add_subdirectory(slicer_extension/BrainTumorSegmentation)" in top


def _ui_value(widget, name):
    """A property of a .ui widget element as Python (bool, int, str, list of str); None when it is not set."""
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop[0]
            if value.tag == "bool":
                return value.text == "true"
            if value.tag == "number":
                return int(value.text)
            if value.tag == "stringlist":
                return [item.text for item in value.findall("string")]
            return value.text or ""
    return None


def _module_enums(tree) -> dict:
    """The module's enum classes, built from their own source (they need nothing but ``enum``)."""
    import enum

    namespace: dict = {"enum": enum}
    names: list[str] = []
    for node in tree.body:  # in order: a base class before its subclasses
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("enum.Enum", *names) for b in node.bases):
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
            names.append(node.name)
    return {name: namespace[name] for name in names}


def _module_statements(tree) -> list:
    """The module file's top-level statements, with those of its ``if SLICER_SUPPORTED:`` blocks (the imports and
    the parameter node class only a supported Slicer runs)."""
    statements = []
    for node in tree.body:
        statements.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "SLICER_SUPPORTED":
            statements.extend(node.body)
    return statements


def test_parameter_node_fields_match_the_ui_widgets():
    """Without Slicer, what ``connectGui`` relies on: every ``SlicerParameterName`` in the .ui names a field of
    the ``@parameterNodeWrapper`` class, every field is bound in the .ui or used in code, and each widget is the
    kind Slicer's connector for the field's type takes (bool: QCheckBox, int: QSpinBox with the field's
    ``WithinRange``, enum: QComboBox with the enum's labels, MRML node: qMRMLNodeComboBox of that class), with
    the field's default shown; the enum choices are what the Lib takes, and the input selector shows the volume
    classes the Lib segments."""
    from BrainTumorSegmentationLib import inference, segmentation

    source = MODULE_FILE.read_text()
    tree = ast.parse(source)
    statements = _module_statements(tree)
    (wrapper,) = [
        node
        for node in statements
        if isinstance(node, ast.ClassDef) and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    ]
    fields = {stmt.target.id: stmt for stmt in wrapper.body if isinstance(stmt, ast.AnnAssign)}
    assert set(fields) == {"inputVolume", "outputSegmentation", "outputProbability", "axis", "batchSize", "device"}
    bound_at_top = {
        a.asname or a.name for n in statements if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
    }
    bound_at_top |= {n.name for n in statements if isinstance(n, ast.ClassDef)} | set(dir(builtins))
    for stmt in fields.values():  # the wrapper evaluates them when the module is imported
        used = {
            n.id for part in (stmt.annotation, stmt.value) if part for n in ast.walk(part) if isinstance(n, ast.Name)
        }
        assert used <= bound_at_top, f"{stmt.target.id}: {used - bound_at_top} not imported or defined"
    enums = _module_enums(tree)

    bound = {}
    for widget in ET.parse(UI_FILE).getroot().iter("widget"):
        name = _ui_value(widget, "SlicerParameterName")
        if name is not None:
            assert name not in bound, f"two widgets bound to {name}"
            bound[name] = widget
    assert set(bound) <= set(fields), f"SlicerParameterName naming no parameter: {set(bound) - set(fields)}"
    for name in set(fields) - set(bound):
        assert re.search(rf"_parameterNode\.{name}\b", source), f"{name} is neither in the .ui nor used in code"

    for name, widget in bound.items():
        stmt, kind = fields[name], widget.get("class")
        base, extras = stmt.annotation, []
        if isinstance(base, ast.Subscript) and ast.unparse(base.value) == "Annotated":
            base, *extras = base.slice.elts
        type_name = ast.unparse(base)
        if type_name == "bool":
            assert kind == "QCheckBox", name
            assert ast.literal_eval(stmt.value) == bool(_ui_value(widget, "checked")), name
        elif type_name == "int":
            assert kind == "QSpinBox", name
            (within,) = [e for e in extras if isinstance(e, ast.Call) and ast.unparse(e.func) == "WithinRange"]
            assert [_ui_value(widget, "minimum"), _ui_value(widget, "maximum")] == [
                ast.literal_eval(a) for a in within.args
            ], name
            assert _ui_value(widget, "value") == ast.literal_eval(stmt.value), name
        elif type_name in enums:
            assert kind == "QComboBox", name
            members = list(enums[type_name])
            items = [item.find("property/string").text for item in widget.findall("item")]
            assert items == [member.label() for member in members], name  # what Slicer's connector puts there
            shown = members[_ui_value(widget, "currentIndex") or 0]
            assert ast.unparse(stmt.value) == f"{type_name}.{shown.name}", name
        elif type_name.startswith("vtkMRML"):
            assert kind == "qMRMLNodeComboBox", name
            assert _ui_value(widget, "nodeTypes") == [getattr(slicer, type_name)().GetClassName()], name
            assert stmt.value is None, name  # a node parameter starts empty
        else:
            pytest.fail(f"{name}: no widget rule for {type_name}")

    # the choices reach the Lib as it takes them
    assert [inference.resolve_device(d.choice) for d in enums["Device"]] == [None, "cpu", "cuda", "mps"]
    assert [btl.resolve_axis((5, 20, 30), a.choice) for a in enums["SliceAxis"]] == [2, 2, 1, 0]
    assert [btl.resolve_axis((1, 20, 30), a.choice) for a in enums["SliceAxis"]][0] == 2  # auto: a 2D image's axis

    # the input selector: scalar volumes and their subclasses but the hidden ones = what check_volume_node takes
    selector = bound["inputVolume"]
    (hidden,) = [
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and ast.unparse(n).startswith("HIDDEN_INPUT_TYPES")
    ]
    assert _ui_value(selector, "showChildNodeTypes") is True
    assert _ui_value(selector, "hideChildNodeTypes") == list(hidden)
    node_type = _ui_value(selector, "nodeTypes")[0]
    volume_classes = [
        "vtkMRMLScalarVolumeNode",
        "vtkMRMLVectorVolumeNode",
        "vtkMRMLLabelMapVolumeNode",
        "vtkMRMLDiffusionWeightedVolumeNode",
        "vtkMRMLDiffusionTensorVolumeNode",
    ]

    def listed(class_name):  # the filter of qMRMLSortFilterProxyModel with showChildNodeTypes
        node = getattr(slicer, class_name)()
        return node.IsA(node_type) and not any(node.IsA(h) for h in hidden)

    assert [c for c in volume_classes if listed(c)] == list(segmentation._SUPPORTED_VOLUMES)


# --------------------------------------------------------------------------------------
# The supported Slicer versions: the module file imported with stand-ins for the application
# --------------------------------------------------------------------------------------
#
# BrainTumorSegmentation.py imports what only a running Slicer has: PythonQt's ``qt`` and ``ctk``,
# ``slicer.ScriptedLoadableModule`` (which imports them), the application object ``slicer.app`` and, after
# Slicer 5.0, ``slicer.parameterNodeWrapper`` (given here from 5.2 on). The minimal classes below stand in for them,
# injected into ``sys.modules`` for one test. ``slicer`` itself is the real package of slicer-core (MRML
# classes, ``slicer.util`` with its ``VTKObservationMixin``) seen through ``SlicerWithApp``, which only adds
# ``app``; vtk, numpy and the Lib are the real ones.


class StandInApp:
    """``slicer.app`` (qSlicerCoreApplication): its version properties, and the signals connected to it."""

    def __init__(self, application_version, major, minor):
        self.applicationVersion = application_version
        if major is not None:  # None: an application without the properties
            self.majorVersion, self.minorVersion = major, minor
        self.connected = []

    def connect(self, signal, slot):
        self.connected.append(signal)


class SlicerWithApp(types.ModuleType):
    """The real ``slicer`` package (slicer-core), with the ``app`` only a running Slicer sets on it."""

    def __init__(self, app):
        super().__init__("slicer")
        self.__path__ = slicer.__path__  # submodules (slicer.util) are slicer-core's
        self.app = app

    def __getattr__(self, name):
        return getattr(slicer, name)


class StandInLayout:
    """The module panel's layout: what was added to it."""

    def __init__(self):
        self.widgets = []

    def addWidget(self, widget):  # noqa: N802 - Qt's name
        self.widgets.append(widget)

    def addStretch(self, stretch=0):  # noqa: N802 - Qt's name
        pass


class StandInQLabel:
    def __init__(self, text=""):
        self.text = text
        self.wordWrap = False


class StandInScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class StandInScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = StandInLayout()


class StandInScriptedLoadableModuleLogic:
    pass


class StandInScriptedLoadableModuleTest:
    def __init__(self):
        self.displayed = []

    def delayDisplay(self, message, msec=None):  # noqa: N802 - Slicer's name
        self.displayed.append(message)


class StandInWithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _stand_in_module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def import_module_in_slicer(monkeypatch):
    """``import_module_in_slicer(application_version, major, minor)``: BrainTumorSegmentation.py imported as the
    Slicer whose ``slicer.app`` reports these would import it, with ``slicer.parameterNodeWrapper`` from Slicer 5.2
    on; returns the module and its ``slicer.app``. What is put into ``sys.modules`` is taken out after the test."""

    def load(application_version, major, minor):
        app = StandInApp(application_version, major, minor)
        wrapper = None  # None in sys.modules: importing it fails, as in Slicer 5.0
        if major is not None and (int(major), int(minor)) >= (5, 2):
            wrapper = _stand_in_module(
                "slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls, WithinRange=StandInWithinRange
            )
        stand_ins = {
            "slicer": SlicerWithApp(app),
            "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": _stand_in_module(
                "slicer.ScriptedLoadableModule",
                ScriptedLoadableModule=StandInScriptedLoadableModule,
                ScriptedLoadableModuleWidget=StandInScriptedLoadableModuleWidget,
                ScriptedLoadableModuleLogic=StandInScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest=StandInScriptedLoadableModuleTest,
            ),
            "qt": _stand_in_module("qt", QLabel=StandInQLabel),
            "ctk": _stand_in_module("ctk"),
            "BrainTumorSegmentation": None,  # set below; removed after the test
        }
        for name, module in stand_ins.items():
            monkeypatch.setitem(sys.modules, name, module)
        spec = importlib.util.spec_from_file_location("BrainTumorSegmentation", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["BrainTumorSegmentation"] = module
        spec.loader.exec_module(module)
        return module, app

    return load


@pytest.mark.parametrize(
    "version, major, minor, running",
    [
        ("5.0.3", 5, 0, "5.0.3"),  # no slicer.parameterNodeWrapper
        ("5.2.2", 5, 2, "5.2.2"),  # the wrapper without enum fields
        ("5.6.2", 5, 6, "5.6.2"),
        ("5.6.2", "5", "6", "5.6.2"),  # the version as text
        ("2.1.0", 5, 6, "5.6"),  # a custom application's own version: Slicer's major.minor is named
        ("5.6.2", None, None, None),  # an application that does not report its version
    ],
)
def test_an_older_slicer_loads_the_module_which_says_the_slicer_it_needs(
    import_module_in_slicer, version, major, minor, running
):
    """On a Slicer older than 5.8 the import succeeds without the parameter node wrapper; the module registers,
    its help starts with the Slicer needed and this one's version, its panel shows only that (word-wrapped), and
    its self-test reports it. No sample data are registered and no parameter node class is made."""
    module, app = import_module_in_slicer(version, major, minor)
    assert module.MINIMUM_SLICER_VERSION == (5, 8) and not module.SLICER_SUPPORTED
    if running is None:
        expected = "This module needs 3D Slicer 5.8 or newer; this Slicer does not report its version."
    else:
        expected = f"This module needs 3D Slicer 5.8 or newer; this is {running}."
    assert module.UNSUPPORTED_MESSAGE == expected
    assert not hasattr(module, "BrainTumorSegmentationParameterNode") and not hasattr(module, "btl")

    parent = types.SimpleNamespace()
    module.BrainTumorSegmentation(parent)
    assert (parent.title, parent.categories) == ("Brain Tumor Segmentation", ["Segmentation"])
    assert parent.helpText.startswith(expected + "\n") and "Segments brain tumors" in parent.helpText
    assert app.connected == []  # the sample data (which the Lib finds) are not registered

    widget = module.BrainTumorSegmentationWidget()
    widget.setup()
    (label,) = widget.layout.widgets
    assert isinstance(label, StandInQLabel) and label.text == expected and label.wordWrap
    assert widget.logic is None and not hasattr(widget, "ui")  # no .ui loaded
    widget.enter()  # showing and leaving the panel, and closing the application, do nothing more
    widget.exit()
    widget.cleanup()

    test = module.BrainTumorSegmentationTest()
    test.runTest()
    assert test.displayed == [expected]


@pytest.mark.parametrize(
    "version, major, minor", [("5.8.1", 5, 8), ("5.10.0", 5, 10), ("5.11.0-2026-01-05", "5", "11"), ("6.0.0", 6, 0)]
)
def test_slicer_5_8_and_newer_get_the_parameter_node_class(import_module_in_slicer, version, major, minor):
    """From Slicer 5.8 on the module is the full one: the parameter node class is made, and its type hints are
    objects that resolve as Slicer's wrapper reads them (``typing.get_type_hints``, in this file's namespace);
    the help is the module's own and the sample data are registered once Slicer has started."""
    module, app = import_module_in_slicer(version, major, minor)
    assert module.SLICER_SUPPORTED and module.UNSUPPORTED_MESSAGE is None
    hints = typing.get_type_hints(module.BrainTumorSegmentationParameterNode, include_extras=True)
    assert hints["inputVolume"] is slicer.vtkMRMLScalarVolumeNode
    assert hints["outputSegmentation"] is slicer.vtkMRMLSegmentationNode
    assert (hints["axis"], hints["device"], hints["outputProbability"]) == (module.SliceAxis, module.Device, bool)
    assert typing.get_origin(hints["batchSize"]) is typing.Annotated
    (within,) = hints["batchSize"].__metadata__
    assert (typing.get_args(hints["batchSize"])[0], within.minimum, within.maximum) == (int, 1, 256)
    assert module.btl is btl

    parent = types.SimpleNamespace()
    module.BrainTumorSegmentation(parent)
    assert parent.helpText.lstrip().startswith("Segments brain tumors")
    assert app.connected == ["startupCompleted()"]


# -- the worker's process, as the module starts it ---------------------------------------------


def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented child may wait unreaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_modules_launcher_uses_slicers_environment_and_cancel_ends_the_whole_tree(
    import_module_in_slicer, monkeypatch, tmp_path
):
    """``_slicerLauncher`` (the process runner the module gives the Lib) starts the worker with Slicer's startup
    environment, in a session of its own, so Cancel ends a real tree: the ``PythonSlicer`` stand-in, the
    ``python-real`` it runs, and the worker's child."""
    import os
    import time

    import numpy as np

    module, _ = import_module_in_slicer("5.8.1", 5, 8)
    startup = {**os.environ, "BRAINSEG_TEST_STARTUP": "Slicer's startup environment"}
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: dict(startup), raising=False)
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\nsys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n"
    )
    launcher.chmod(0o755)
    worker = tmp_path / "spawning_worker.py"
    worker.write_text(
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('PIDS', os.getpid(), child.pid, os.getsid(0), flush=True)\n"
        "print('STARTUP', os.environ.get('BRAINSEG_TEST_STARTUP'), flush=True)\n"
        "time.sleep(120)\n"
    )
    run = module.background.WorkerRun(
        np.zeros((1, 4, 4), np.float32),
        str(BUNDLE),
        python=str(launcher),
        worker=str(worker),
        launcher=module._slicerLauncher,
    )
    deadline = time.monotonic() + 60
    while not any(line.startswith("STARTUP") for line in run.log) and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    worker_pid, child_pid, session = (int(p) for p in next(x for x in run.log if x.startswith("PIDS")).split()[1:])
    assert session == run.process.pid != os.getsid(0)  # the launcher leads a session of its own
    assert "STARTUP Slicer's startup environment" in run.log
    tree = [run.process.pid, worker_pid, child_pid]
    assert all(_alive(pid) for pid in tree)
    run.cancel()
    assert run.wait(30) and run.cancelled and run.result is None
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in tree if _alive(pid)]


def test_on_windows_the_modules_launcher_opens_no_console_window(import_module_in_slicer, monkeypatch):
    """The Windows branch of ``_slicerLauncher``, with ``os.name`` set to ``"nt"`` and ``Popen`` recorded (the
    OS edge only): ``CREATE_NO_WINDOW`` and a hidden ``STARTUPINFO`` window, Slicer's startup environment with
    the run's additions, UTF-8 text output."""
    import os
    import subprocess

    module, _ = import_module_in_slicer("5.8.1", 5, 8)

    class StartupInfo:  # subprocess.STARTUPINFO exists on Windows only
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 1

    recorded = []
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: {"PATH": r"C:\Slicer\bin"}, raising=False)
    monkeypatch.setattr(subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kwargs: recorded.append((args, kwargs)) or "process")
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(sys, "platform", "win32")
    assert module._slicerLauncher(("PythonSlicer.exe", "worker.py"), {"CUDA_VISIBLE_DEVICES": "-1"}) == "process"
    ((args, kwargs),) = recorded
    assert args == ["PythonSlicer.exe", "worker.py"]
    assert kwargs["creationflags"] == 0x08000000 and "start_new_session" not in kwargs  # CREATE_NO_WINDOW
    assert kwargs["startupinfo"].dwFlags & 0x1 and kwargs["startupinfo"].wShowWindow == 0  # SW_HIDE
    assert kwargs["env"] == {"PATH": r"C:\Slicer\bin", "CUDA_VISIBLE_DEVICES": "-1"}
    assert (kwargs["encoding"], kwargs["errors"]) == ("utf-8", "replace")


class StandInQTimer:
    """``qt.QTimer`` as BackgroundSegmentation uses it. It never fires: the test polls the run itself."""

    def __init__(self):
        self.active = False
        self.timeout = types.SimpleNamespace(connect=lambda slot: None)

    def setInterval(self, msec):  # noqa: N802 - Qt's name
        pass

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):  # noqa: N802 - Qt's name
        return self.active


def test_the_modules_background_run_hands_the_worker_the_volumes_spacing(
    import_module_in_slicer, monkeypatch, tmp_path, smoke_model
):
    """``startProcessing`` (Apply's background run) gives the worker the volume's spacing with its directions: a
    real run (a ``PythonSlicer`` stand-in running this Python, the real worker and bundle, the smoke model) of a
    volume of 3 mm coronal slices puts into the scene what the Lib's in-process run gives, whose network saw the
    axial slices with square pixels."""
    import os

    import numpy as np
    import scene_checks as testing
    from conftest import SAMPLE_SPLIT, SMOKE_NETWORK

    from scripts.predictor import BundlePredictor

    module, _ = import_module_in_slicer("5.8.1", 5, 8)
    folder = tmp_path / "bin"
    folder.mkdir()
    launcher = folder / "PythonSlicer"
    launcher.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\nsys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n"
    )
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: dict(os.environ), raising=False)
    monkeypatch.setattr(module.qt, "QTimer", StandInQTimer, raising=False)
    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(module.slicer, "mrmlScene", scene, raising=False)  # where the result is put
    greys = [sample.grey for sample in testing.read_samples(SAMPLE_SPLIT, 3)]
    h, w = greys[0].shape
    voxels = np.stack([g[h // 2 - 24 : h // 2 + 24, w // 2 - 20 : w // 2 + 20] for g in greys])  # (k, j, i)
    # J (front to back) 3 mm, I and K 0.5 mm: the axial slices' pixels are six times as long as wide
    volume = testing.add_scalar_volume(
        scene, voxels, "thick coronal", (0.5, 3.0, 0.5), testing.TEST_ORIGIN, testing.JPEG_IJK_TO_RAS_DIRECTIONS
    )
    finished = []
    run = module.BrainTumorSegmentationLogic().startProcessing(
        volume,
        bundleDir=str(BUNDLE),
        forceCPU=True,
        outputProbability=True,
        batchSize=2,
        onFinished=lambda *args: finished.append(args),
        ckptPath=str(smoke_model),
        configFiles=[str(SMOKE_NETWORK)],
    )
    # one argument each: a direction starting with a minus must not be taken for an option
    assert "--spacing=0.5,3.0,0.5" in run.run.command
    assert "--direction=-1.0,0.0,0.0,0.0,-1.0,0.0,0.0,0.0,1.0" in run.run.command
    assert run.run.wait(300), "the worker did not finish"
    run._poll()  # what the Qt timer does: the result into the scene, then onFinished
    ((segmentation, error, cancelled),) = finished
    assert error is None and not cancelled and segmentation is not None, error

    predictor = BundlePredictor(BUNDLE, ckpt_path=smoke_model, config_files=[SMOKE_NETWORK], device="cpu")
    expected = btl.segment_volume(volume, predictor=predictor, batch_size=2, output_probability=True)
    assert np.array_equal(btl.segmentation_label_map(segmentation), btl.segmentation_label_map(expected))
    probability = slicer.util.arrayFromVolume(btl.probability_node_of(segmentation))
    assert np.allclose(probability, slicer.util.arrayFromVolume(btl.probability_node_of(expected)), atol=1e-6)
    # without the spacing the squeezed planes give another probability: the spacing is what made them agree
    squeezed = btl.predict_volume(voxels, predictor, batch_size=2, with_probability=True)[1]
    assert not np.allclose(probability, squeezed, atol=1e-3)


# -- the summary follows the chosen bundle -------------------------------------------------------


@pytest.fixture
def bundle_code_not_loaded():
    """This process as Slicer's is before the module has run anything: no bundle code (``scripts``) loaded.
    What was loaded (the tests' own bundle code) and ``sys.path`` are put back afterwards."""

    def loaded():
        return {name: m for name, m in sys.modules.items() if name == "scripts" or name.startswith("scripts.")}

    saved, path = loaded(), list(sys.path)
    for name in saved:
        del sys.modules[name]
    yield
    for name in loaded():
        del sys.modules[name]
    sys.modules.update(saved)
    sys.path[:] = path


def test_the_status_summary_counts_along_the_axis_the_chosen_bundle_picks(
    import_module_in_slicer, bundle_code_not_loaded, tmp_path, caplog
):
    """A second, real bundle folder (the shipped one copied, another metadata name, and a slice loop whose Auto
    axis is J): the axis the run uses, and so the "tumor found on N of M slices" the status line shows, come from
    the bundle chosen in the panel, not from the default one."""
    import json
    import logging
    import shutil

    import numpy as np

    module, _ = import_module_in_slicer("5.8.1", 5, 8)
    second = tmp_path / "second_bundle"
    shutil.copytree(BUNDLE, second, ignore=shutil.ignore_patterns("eval", "__pycache__", "*.pt", "*.ts", "*.onnx"))
    metadata = json.loads((second / "configs" / "metadata.json").read_text())
    metadata["name"] = "Second bundle (J slices)"
    (second / "configs" / "metadata.json").write_text(json.dumps(metadata))
    volumes = second / "scripts" / "volumes.py"
    source = volumes.read_text()
    auto = "    return (axial, transpose) if chosen in (None, axial) else (chosen, False)\n"
    assert source.count(auto) == 1, "slicing's Auto branch for a volume is not where this test expects it"
    volumes.write_text(
        source.replace(auto, "    return (1, False) if chosen is None else (chosen, False)  # J: its choice\n")
    )
    assert btl.bundle_info(second)["name"] == "Second bundle (J slices)"

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mri")
    slicer.util.updateVolumeFromArray(volume, np.zeros((4, 5, 6), np.float32))  # (k, j, i)
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = mask[3, 2, 0] = 1  # on K slices 1 and 3; on J slice 2 only
    segmentation = btl.apply_prediction(volume, mask)
    logic = module.BrainTumorSegmentationLogic

    axis = logic.sliceAxis(volume, None, str(second))
    assert axis == 1 and sys.modules["scripts.volumes"].__file__ == str(volumes)
    assert logic.tumorSummary(segmentation, axis) == "tumor found on 1 of 5 slices"
    assert logic.sliceAxis(volume, "K", str(second)) == 2  # a chosen axis is kept
    # Python keeps the bundle code loaded first: another bundle chosen later is told, not silently used
    with caplog.at_level(logging.WARNING):
        assert logic.sliceAxis(volume, None, str(BUNDLE)) == 1
    assert any(
        "loaded first in this session" in r.getMessage() and str(second) in r.getMessage() for r in caplog.records
    )


def test_the_status_summary_of_the_default_bundle(import_module_in_slicer, bundle_code_not_loaded):
    """The same volume and mask with the shipped bundle (Auto: K) and with no folder chosen (the default)."""
    import numpy as np

    module, _ = import_module_in_slicer("5.8.1", 5, 8)
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mri")
    slicer.util.updateVolumeFromArray(volume, np.zeros((4, 5, 6), np.float32))
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = mask[3, 2, 0] = 1
    segmentation = btl.apply_prediction(volume, mask)
    logic = module.BrainTumorSegmentationLogic
    assert logic.sliceAxis(volume, None, str(BUNDLE)) == logic.sliceAxis(volume, None, None) == 2
    assert logic.tumorSummary(segmentation, 2) == "tumor found on 2 of 4 slices"
    with pytest.raises(ImportError, match="no bundle code"):
        logic.sliceAxis(volume, None, str(BUNDLE / "configs"))  # a folder without scripts/: Apply says so


# -- the Extensions Index entry ----------------------------------------------------------------


def _cmake_set(text: str, name: str) -> str:
    """The value of ``set(NAME "value")`` in a CMakeLists.txt, with the ``${VAR}`` of its own ``set``s expanded."""
    values = {m.group(1): m.group(2) for m in re.finditer(r'^set\((\w+) "([^"]*)"\)', text, re.MULTILINE)}
    return re.sub(
        r"\$\{(\w+)\}", lambda m: _cmake_set(text, m.group(1)) if m.group(1) in values else m.group(0), values[name]
    )


def test_the_extensions_index_entry_parses_and_matches_cmakelists():
    """``slicer_extension/BrainTumorSegmentation.json`` is what goes to the root of Slicer/ExtensionsIndex as
    ``BrainTumorSegmentation.json``: catalog entry schema v1.0.2 (only its keys: the schema allows no other), the
    category, repository and extension dependencies of the top-level CMakeLists.txt, whose icon and screenshot
    URLs point at files of this repository; LICENSE.txt, packaged with the extension, is the project's license."""
    import json

    entry = json.loads((REPO / "slicer_extension" / "BrainTumorSegmentation.json").read_text())
    schemas = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    assert entry["$schema"] == schemas + "slicer-extension-catalog-entry-schema-v1.0.2.json#"
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "build_subdirectory",
        "enabled",
        "tier",
        "dicom_support_rule",
    }
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert all(isinstance(entry[k], str) for k in ("$schema", "category", "scm_url", "scm_revision"))
    assert entry["scm_type"] == "git" and entry["build_subdirectory"] == "." and entry["tier"] == 1
    top = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(BrainTumorSegmentation\)", top, re.MULTILINE)  # the entry's file name
    assert entry["category"] == _cmake_set(top, "EXTENSION_CATEGORY")
    repository = _cmake_set(top, "BRAINSEG_REPOSITORY_URL")
    assert entry["scm_url"] == repository
    depends = re.search(r"^set\(EXTENSION_DEPENDS ([^)#]*)\)", top, re.MULTILINE).group(1).split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]  # as SlicerTotalSegmentator and MONAIAuto3DSeg
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = _cmake_set(top, key)
        assert url.startswith(repository + "/"), key
        if "/raw/" in url:  # the file the URL shows is in the repository, where the URL says, at the entry's revision
            assert (REPO / url.split(f"/raw/{entry['scm_revision']}/", 1)[1]).is_file(), url
    assert "segmentation result rendered off-screen, not a Slicer window" in top
    readme = (REPO / "slicer_extension" / "README.md").read_text()
    assert "segmentation result rendered off-screen, not a Slicer window" in readme and repository in readme
    assert _cmake_set(top, "EXTENSION_LICENSE_FILE") == "${CMAKE_CURRENT_SOURCE_DIR}/LICENSE.txt"
    assert (REPO / "LICENSE.txt").read_text() == (REPO / "LICENSE").read_text()


class _StandInWidget(types.SimpleNamespace):
    """A Qt widget of the panel: its ``enabled``, ``toolTip`` and ``text``, and the calls the module makes."""

    def __init__(self, **fields):
        super().__init__(enabled=True, toolTip="", text="", lines=[], **fields)

    def clear(self):
        self.lines.clear()

    def appendPlainText(self, line):  # noqa: N802 - Qt's name
        self.lines.append(line)

    def setValue(self, value):  # noqa: N802 - Qt's name
        self.value = value

    def setVisible(self, visible):  # noqa: N802 - Qt's name
        self.visible = visible


def test_apply_waits_for_the_install_then_never_writes_over_another_volumes_result(
    import_module_in_slicer, monkeypatch
):
    """Apply with the output selector still on patient A's result and patient B's volume as input: Apply stays
    disabled while the packages install (Slicer's pip runner keeps the panel live), and B's result goes to a
    new segmentation; A's is left as it was. A failed run says why in the dialog's main text and the status."""
    import numpy as np
    import scene_checks as testing

    module, _ = import_module_in_slicer("5.8.1", 5, 8)
    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(module.slicer, "mrmlScene", scene, raising=False)
    voxels = np.zeros((2, 16, 16), np.float32)
    voxels[:, 4:12, 4:12] = 100.0
    patient_a = testing.add_scalar_volume(scene, voxels, "patient A")
    patient_b = testing.add_scalar_volume(scene, voxels, "patient B")
    result_a = btl.apply_prediction(patient_a, (voxels > 0).astype(np.uint8))

    widget = module.BrainTumorSegmentationWidget()
    widget.ui = types.SimpleNamespace(
        **{
            name: _StandInWidget()
            for name in (
                "applyButton",
                "cancelButton",
                "inputVolumeSelector",
                "outputSegmentationSelector",
                "bundlePathLineEdit",
                "logTextEdit",
                "statusLabel",
                "progressBar",
            )
        }
    )
    widget._parameterNode = types.SimpleNamespace(
        inputVolume=patient_b,
        outputSegmentation=result_a,  # where the selector points after A's run
        axis=types.SimpleNamespace(choice=None),
        device=types.SimpleNamespace(choice="cpu"),
        outputProbability=False,
        batchSize=2,
    )
    widget.saveSettings = lambda: None
    widget.bundleDir = lambda: str(BUNDLE)
    seen = {}

    class Logic:
        sliceAxis = staticmethod(lambda volume, axis, bundle_dir: 0)

        def setupPythonRequirements(self, bundle_dir):
            seen["apply enabled while installing"] = widget.ui.applyButton.enabled
            return True

        def startProcessing(self, volume, segmentation, **options):
            seen["volume"], seen["output"] = volume, segmentation
            return None  # the run ends at once: Apply is enabled again

    widget.logic = Logic()
    widget.onApply()
    assert seen == {"apply enabled while installing": False, "volume": patient_b, "output": None}
    assert widget.ui.applyButton.enabled and not widget._installing
    assert any(
        "'patient A brain tumor' holds the result of another volume" in line for line in widget.ui.logTextEdit.lines
    )
    assert btl.source_volume_of(result_a) is patient_a and btl.segment_mask_array(result_a).any()

    shown = []
    monkeypatch.setattr(module.slicer.util, "errorDisplay", lambda text, **kw: shown.append((text, kw)), raising=False)
    widget.onFinished(None, "device 'cuda' (CUDA GPU) is not available: choose Auto or CPU\nTraceback ...", False)
    ((text, details),) = shown
    assert text == "Brain tumor segmentation failed: device 'cuda' (CUDA GPU) is not available: choose Auto or CPU"
    assert details["detailedText"].endswith("Traceback ...")
    assert widget.ui.statusLabel.text.startswith("Failed: device 'cuda'")
