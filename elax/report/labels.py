"""Readable names for figures and tables, and the roles of a report's models.

Models: the family's usual name, then what sets the model apart from the family's default in parentheses:
'cifar_resnet_20' -> 'ResNet-20', 'cifar_resnet_20_8' -> 'ResNet-20 (w8)' (base width 8; the default width, 16
for CIFAR ResNets and 64 for VGGs and ImageNet ResNets, is never shown), 'cifar_vgg_16' -> 'VGG-16',
'imagenet_resnet_18' -> 'ResNet-18', 'vit_6_64_p7' -> 'ViT-6 (64, p7)' (dim, patch; then heads and pooling
when named), 'mlp_300_100' -> 'MLP 300-100', 'mlp_4x300' -> 'MLP 4x300'; a model of another family keeps its
name.

Series: 'IMP ResNet-20'; 'ETT ResNet-14 → 20 (append)' (the target's family and details are not repeated when
they are the source's: 'ETT ResNet-14 → 20 (w8, append)'; otherwise 'ETT VGG-16 → ResNet-20 (append)'); a
baseline by its method's name ('Random', 'SNIP', 'One-shot magnitude', an unknown method as named), followed by
its model ('Random ResNet-20') where the report has several target models. A structure other than unstructured
appends ', 2:4'; a report of several recipes appends ' [recipe <id>]'. Labels that would still coincide (say
'cifar_resnet_20' and 'cifar_resnet_20_16', one model by two names) fall back to the series names.

Roles: a source is the source model of an ETT series that no series other than IMP has as its model (its IMP
curve is drawn dashed); every other model of the report is a target.
"""

import re
from typing import NamedTuple

from elax.report.records import UNSTRUCTURED
from elax.workdir import ETT, IMP

METHOD_LABELS = {
    IMP: "IMP", ETT: "ETT", "random": "Random", "reinit": "Reinit", "snip": "SNIP", "grasp": "GraSP",
    "synflow": "SynFlow", "magnitude": "One-shot magnitude", "rigl": "RigL", "set": "SET",
}


DISTRIBUTION_LABELS = {"erk": "ERK", "uniform": "uniform", "global": "global"}


class ModelLabel(NamedTuple):
    """A model's readable name in parts: 'ResNet-' + '20' + ('w8',) reads 'ResNet-20 (w8)'."""

    family: str      # with its separator ('ResNet-', 'MLP '); '' for a model of an unknown family
    spec: str        # depth, or the MLP's widths
    details: tuple   # what differs from the family's defaults

    def __str__(self):
        return self.family + self.spec + (f" ({', '.join(self.details)})" if self.details else "")


def _width_family(name, default_width):
    """Parser of a '<depth>[_<width>]' family: the width is shown only when it is not the default."""
    def parse(depth, width):
        shown = width is not None and int(width) != default_width
        return ModelLabel(name, depth, (f"w{width}",) if shown else ())
    return parse


def _vit(depth, dim, patch, heads, gap):
    return ModelLabel("ViT-", depth, (dim, f"p{patch}", *([f"h{heads}"] if heads else []), *(["gap"] if gap else [])))


# (the family's registry name pattern, as in elax.models, and its parser); parsed by name only, without
# elax.models, so that reports need no JAX.
_FAMILIES = (
    (re.compile(r"cifar_resnet_(\d+)(?:_(\d+))?"), _width_family("ResNet-", 16)),
    (re.compile(r"imagenet_resnet_(\d+)(?:_(\d+))?"), _width_family("ResNet-", 64)),
    (re.compile(r"cifar_vgg_(\d+)(?:_(\d+))?"), _width_family("VGG-", 64)),
    (re.compile(r"vit_(\d+)_(\d+)_p(\d+)(?:_h(\d+))?(_gap)?"), _vit),
    (re.compile(r"mlp_(\d+x\d+)"), lambda spec: ModelLabel("MLP ", spec, ())),
    (re.compile(r"mlp_(\d+(?:_\d+)*)"), lambda spec: ModelLabel("MLP ", spec.replace("_", "-"), ())),
)


def model_label(model) -> ModelLabel:
    """The readable name of a model (see the module docstring); str() it for the text."""
    for regex, parse in _FAMILIES:
        match = regex.fullmatch(model)
        if match:
            return parse(*match.groups())
    return ModelLabel("", model, ())


def method_label(method) -> str:
    """'Random', 'SNIP', 'One-shot magnitude', 'Random (ERK)' for 'random-erk' (a layer distribution), 'RigL
    (every 25)' for 'rigl-every25' (mask-update settings); a method this table does not know keeps its name."""
    base, *variants = method.split("-")
    if base in METHOD_LABELS and variants:
        return f"{METHOD_LABELS[base]} ({', '.join(_variant_label(v) for v in variants)})"
    return METHOD_LABELS.get(method, method)


def _variant_label(variant: str) -> str:
    setting = re.fullmatch(r"(every|drop|end)(\d.*)", variant)
    return f"{setting[1]} {setting[2]}" if setting else DISTRIBUTION_LABELS.get(variant, variant)


def ett_label(source, target, strategy) -> str:
    """'ETT ResNet-14 → 20 (w8, append)': the target's family and details are not repeated when the source's."""
    s, t = model_label(source), model_label(target)
    if s.family and (s.family, s.details) == (t.family, t.details):
        return f"ETT {s.family}{s.spec} → {t.spec} ({', '.join((*s.details, strategy))})"
    return f"ETT {s} → {t} ({strategy})"


def series_label(info, name_model=True, with_recipe=False) -> str:
    """The label of a series described by `info` (a table.Series); `name_model`: a baseline names its model."""
    if info.method == ETT:
        label = ett_label(info.source, info.model, info.strategy)
    elif info.method == IMP or name_model:
        label = f"{method_label(info.method)} {model_label(info.model)}"
    else:
        label = method_label(info.method)
    if info.structure != UNSTRUCTURED:
        label += f", {info.structure}"
    return label + (f" [recipe {info.recipe}]" if with_recipe else "")


def sources(table) -> set:
    """The report's source models: ETT sources that no series other than IMP has as its model."""
    targeted = {i.model for i in table.info.values() if i.method != IMP}
    return {i.source for i in table.info.values() if i.method == ETT} - targeted


def targets(table) -> set:
    """The report's target models: every model of its series but the sources."""
    return {i.model for i in table.info.values()} - sources(table)


def series_labels(table) -> dict:
    """{series name: label} for every series of `table` (names where the table has no `info`)."""
    if set(table.info) != set(table.series):
        return {name: name for name in table.series}
    name_model = len(targets(table)) > 1
    with_recipe = len({i.recipe for i in table.info.values()}) > 1
    found = {name: series_label(table.info[name], name_model, with_recipe) for name in table.series}
    taken = list(found.values())
    # Two series must never share a legend entry or a column header: those fall back to their names.
    return {name: label if taken.count(label) == 1 else name for name, label in found.items()}
