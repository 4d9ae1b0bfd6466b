"""What Slicer's parameter-node GUI connectors accept, read from Slicer's source, as a static check.

Desktop Slicer cannot run in CI, so ``MuscleSAM.ui`` and the module's ``@parameterNodeWrapper`` class are
checked against the rules of ``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py`` at v5.6.2,
v5.8.1 and v5.10.0, keeping only what ALL of them accept (one refused binding makes ``connectGui`` raise
before anything is connected):

* ``qMRMLNodeComboBox``: an MRML node class (or a Union/Optional of them).
* ``QComboBox``: int/float/str/bool only with a ``Choice`` annotation ("requires the Choice annotation").
* ``ctkSliderWidget``/``qMRMLSliderWidget``: float (int only from 5.10) with ``WithinRange`` or
  ``Minimum`` + ``Maximum`` ("the float types is unbounded"); ``QDoubleSpinBox``: float.
* ``QSlider`` (bounded) / ``QSpinBox``: int; ``QCheckBox``: bool; ``QLineEdit``/``QTextEdit``: str
  (``QLabel`` only from 5.8: refused); ``ctkPathLineEdit``/``ctkDirectoryButton``: pathlib.Path.
* Any other widget class: no connector ("Unable to create GUI connector").
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

NODE_UNIONS = ("Union", "Optional")


@dataclass(frozen=True)
class Annotation:
    """One parameter's declared type reduced to what the connectors look at."""

    base: str  # "float", "str", "vtkMRMLScalarVolumeNode", "Path", ...
    names: frozenset  # annotation class names used (Choice, WithinRange, Minimum, Maximum, ...)
    default: object = None
    choices: tuple = ()
    bounds: tuple = ()


def ui_widgets(ui_file: Path) -> tuple[dict, dict]:
    """(widget name -> class, parameter name -> widget name) from a Qt Designer file."""
    classes, bound = {}, {}
    for widget in ET.parse(ui_file).getroot().iter("widget"):
        classes[widget.get("name")] = widget.get("class")
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("name")
    return classes, bound


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _reduce(node: ast.AST, default) -> Annotation:
    """Annotated[T, Choice([...]), WithinRange(a, b)] / Optional[Node] / T -> Annotation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        node = ast.parse(node.value, mode="eval").body
    names, choices, bounds = set(), (), ()
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Annotated":
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        node = elts[0]
        for extra in elts[1:]:
            if isinstance(extra, ast.Call):
                name = getattr(extra.func, "id", getattr(extra.func, "attr", ""))
                names.add(name)
                args = [_literal(a) for a in extra.args]
                if name == "Choice" and args:
                    choices = tuple(args[0] or ())
                if name == "WithinRange" and len(args) == 2:
                    bounds = tuple(args)
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") in NODE_UNIONS:
        inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        bases = [getattr(e, "id", getattr(e, "attr", "")) for e in inner if getattr(e, "value", 0) is not None]
        base = bases[0] if len(bases) == 1 or all(b.startswith("vtkMRML") for b in bases) else "Union"
    elif isinstance(node, ast.BinOp):  # Node | None
        base = getattr(node.left, "id", "Union")
    else:
        base = getattr(node, "id", getattr(node, "attr", ast.dump(node)))
    return Annotation(base, frozenset(names), default, choices, bounds)


def parameter_node_annotations(module_file: Path) -> dict:
    """Parameter name -> Annotation of the class decorated with @parameterNodeWrapper."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        decorators = [getattr(d, "id", getattr(d, "attr", "")) for d in cls.decorator_list]
        if "parameterNodeWrapper" in decorators:
            return {st.target.id: _reduce(st.annotation, _literal(st.value) if st.value is not None else None)
                    for st in cls.body if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)}
    raise AssertionError(f"{module_file}: no @parameterNodeWrapper class")


def _bounded(a: Annotation) -> bool:
    return "WithinRange" in a.names or {"Minimum", "Maximum"} <= a.names


def refusal(widget_class: str, a: Annotation) -> str | None:
    """Why some supported Slicer version refuses this binding, or None when all accept it."""
    if widget_class == "qMRMLNodeComboBox":
        return None if a.base.startswith("vtkMRML") else f"{a.base} is not an MRML node type"
    if widget_class == "QComboBox":
        if a.base in ("int", "float", "str", "bool"):
            return None if "Choice" in a.names else "ComboBoxToStringableConnector requires the Choice annotation"
        return f"{a.base} on a QComboBox (only int/float/str/bool with Choice, or an Enum)"
    if widget_class in ("ctkSliderWidget", "qMRMLSliderWidget"):
        if a.base != "float":
            return f"{a.base} on {widget_class}: Slicer 5.6/5.8 connect only float"
        return None if _bounded(a) else "Cannot have a connection to ctkSliderWidget where the float types is unbounded"
    if widget_class == "QSlider":
        return None if a.base == "int" and _bounded(a) else "QSlider needs a bounded int"
    simple = {"QDoubleSpinBox": "float", "QSpinBox": "int", "QCheckBox": "bool", "QLineEdit": "str",
              "QTextEdit": "str", "ctkPathLineEdit": "Path", "ctkDirectoryButton": "Path"}
    if widget_class in simple:
        return None if a.base == simple[widget_class] else f"{widget_class} connects {simple[widget_class]}, not {a.base}"
    return f"no GUI connector for widget class {widget_class} in Slicer 5.6-5.10"


def _default_problem(name: str, a: Annotation) -> str | None:
    if a.choices and a.default is not None and a.default not in a.choices:
        return f"{name}: default {a.default!r} not in Choice {list(a.choices)}"
    if a.bounds and a.default is not None and not (a.bounds[0] <= a.default <= a.bounds[1]):
        return f"{name}: default {a.default!r} outside WithinRange{a.bounds}"
    return None


def binding_problems(ui_file: Path, module_file: Path) -> list[str]:
    """Every binding of the .ui to the parameter node that Slicer would refuse, and every self.ui.X not in the .ui."""
    classes, bound = ui_widgets(ui_file)
    params = parameter_node_annotations(module_file)
    problems = []
    for param, widget in sorted(bound.items()):
        if param not in params:
            problems.append(f"{widget}: SlicerParameterName {param!r} is not a parameter of the node")
            continue
        why = refusal(classes[widget], params[param])
        if why:
            problems.append(f"{widget} ({classes[widget]}) <- {param}: {why}")
    problems += [p for p in (_default_problem(n, a) for n, a in sorted(params.items())) if p]
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
            and n.value.attr == "ui" and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"}
    problems += [f"self.ui.{name} is not a widget in {ui_file.name}" for name in sorted(used - set(classes))]
    return problems


# Keys Slicer 5.6-5.10 bind while a module panel is shown, from Slicer's source at v5.6.2 / v5.8.1 / v5.10.0:
# slice views (Libs/MRML/DisplayableManager/vtkMRMLSliceIntersectionWidget.cxx, any modifier for V) and the
# Segment Editor's installKeyboardShortcuts (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx),
# which MuscleSAM's embedded editor installs on enter.
SLICER_KEYS = ({"B", "F", "G", "R", "T", "V", "SHIFT+V", "CTRL+V", "UP", "DOWN", "LEFT", "RIGHT", "[", "]", "{", "}",
                "ESC", "ESCAPE", "SPACE", "Z", "Y", "CTRL+Z", "CTRL+Y", "CTRL+SHIFT+Z", "Q", "W", "I", "/", "*", ",",
                ".", "<", ">", "CTRL+B", "CTRL+F", "+", "-"}
               | {str(d) for d in range(10)} | {f"SHIFT+{d}" for d in range(10)})


def module_shortcuts(module_file: Path) -> dict:
    """The module's SHORTCUTS table (button name -> key sequence)."""
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SHORTCUTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{module_file}: no SHORTCUTS table")


def shortcut_problems(ui_file: Path, module_file: Path) -> list[str]:
    """Shortcuts that shadow Slicer's keys, name a button not in the .ui, or are not shown on the button."""
    texts = {w.get("name"): (w.find("property[@name='text']/string").text if w.find("property[@name='text']/string")
                             is not None else "") for w in ET.parse(ui_file).getroot().iter("widget")}
    problems = []
    for button, key in module_shortcuts(module_file).items():
        if key.upper().replace(" ", "") in SLICER_KEYS:
            problems.append(f"{button}: {key} is already Slicer's key")
        if button not in texts:
            problems.append(f"{button}: not a widget of {ui_file.name}")
        elif f"({key})" not in texts[button]:
            problems.append(f"{button}: its text {texts[button]!r} does not show ({key})")
    return problems
