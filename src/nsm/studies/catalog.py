"""The tables ``nsm reproduce`` knows: each a :class:`PaperTable` (its models, datasets,
per-dataset protocol overrides and the pairs of models its ``table.md`` compares) registered
in :data:`TABLES` by name.

- ``mnist``: every model of the paper's MNIST comparison;
- ``main``: the paper's main table, bNSM, gNSM and dCNN on every dataset;
- ``mnist-authors-dcnn``: the dCNN as the authors' released script trains it;
- ``fashion-mnist``: the NSMs and the dCNN on Fashion-MNIST, with grey-level input variants;
- ``mnist-candidates``: why an NSM might trail the dCNN, one change at a time.

Training them is :mod:`nsm.studies.reproduce`'s; their files, :mod:`nsm.studies.tables`'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils.registry import Registry

__all__ = ["PaperTable", "TABLES", "MNIST_MODELS"]


@dataclass(frozen=True)
class PaperTable:
    """A table to reproduce: its models and datasets, and protocol overrides per dataset."""

    name: str
    description: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    protocol: dict = field(default_factory=dict)  # dataset -> {config field: value}
    # (model, minus) pairs compared in table.md besides each model against the dCNN
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for pair in self.pairs:
            unknown = [m for m in pair if m not in self.models]
            if len(pair) != 2 or pair[0] == pair[1] or unknown:
                raise ValueError(
                    f"table {self.name!r}: a pair is two different models of the table, got {pair!r}"
                    + (f" ({', '.join(map(repr, unknown))} not in it)" if unknown else "")
                )

    @property
    def title(self) -> str:
        """The heading of the table's ``table.md``."""
        return f"nsm reproduce {self.name}: {self.description}"


TABLES: Registry[PaperTable] = Registry("table")

MNIST_MODELS = (
    "dcnn",
    "bnsm",
    "gnsm",
    "ste",
    "bd",
    "wbd",
    "sn",
    "bn",
    "bnsm-binconcrete",
    "gnsm-binconcrete",
    "sigmoid",
    "stnn",
    "bnn",
    "s2m",
    "bnsm-fc",
    "stnn-fc",
)
TABLES.register(
    "mnist",
    PaperTable("mnist", "every model of the paper's MNIST comparison (docs/design.md §7)", MNIST_MODELS, ("mnist",)),
)
TABLES.register(
    "main",
    PaperTable(
        "main",
        "the paper's main table: bNSM, gNSM and dCNN on every dataset (docs/design.md §7), each "
        "on the network and protocol the paper uses for it",
        ("dcnn", "bnsm", "gnsm"),
        ("mnist", "emnist", "nmnist", "dvs-gesture", "cifar10", "cifar100"),
    ),
)
TABLES.register(
    "mnist-authors-dcnn",
    PaperTable(
        "mnist-authors-dcnn",
        "the dCNN as the authors' released MNIST script trains it: no weight decay and a constant "
        "learning rate, with its 150-unit fc layer (dcnn-150) and with the 512 units of the NSMs (dcnn)",
        ("dcnn-150", "dcnn"),
        ("mnist",),
        protocol={"mnist": {"weight_decay": 0.0, "lr_gamma": 1.0}},
    ),
)
TABLES.register(
    "fashion-mnist",
    PaperTable(
        "fashion-mnist",
        "bNSM, gNSM and dCNN on Fashion-MNIST (Table 6 network; not in the paper), and the "
        "NSMs whose first layer reads grey levels (bnsm-real, gnsm-real)",
        ("dcnn", "bnsm", "gnsm", "bnsm-real", "gnsm-real"),
        ("fashion-mnist",),
    ),
)


TABLES.register(
    "mnist-candidates",
    PaperTable(
        "mnist-candidates",
        "why an NSM might trail the dCNN on MNIST, one change at a time: the bias on the unit-norm "
        "weights (bnsm-unitbias), a 1024-unit fc layer (bnsm-wide, dcnn-wide), the authors' "
        "BinConcrete forward pass (bnsm-binconcrete), beside bnsm and dcnn",
        ("dcnn", "bnsm", "bnsm-unitbias", "bnsm-wide", "dcnn-wide", "bnsm-binconcrete"),
        ("mnist",),
        pairs=(
            ("bnsm-unitbias", "bnsm"),
            ("bnsm-wide", "bnsm"),
            ("bnsm-binconcrete", "bnsm"),
            ("dcnn-wide", "dcnn"),
            ("bnsm-wide", "dcnn-wide"),
        ),
    ),
)
