"""The experiment matrix (DESIGN.md section 9): initialisations, view sets and the runs
each of the paper's tables needs.

A fine-tuning run is named by its initialisation, a path fragment that says where its
encoder comes from:

- ``random``: no pretraining;
- ``<source>/cpc``: CPC of each view alone on the dataset ``source``;
- ``<source>/<method>/<view set>``: a joint method (cocon, cpc+sim, cpc+sync) that
  trained the views of ``view set`` together, e.g. ``ucf101/cocon/rgb+flow+pose+seg``;
- ``external/<name>``: a checkpoint from outside the workflow (DPC's released weights),
  named under the dataset config's ``external`` key and imported into
  ``results/<dataset>/external/<name>.pt``.

View sets are their views joined by ``+`` in the fixed order rgb, flow, pose, seg, so a
set has exactly one name. The outputs follow the names:
``results/<dataset>/split<k>/finetune/<init>/<view>.scores.npz`` and
``results/<source>/split<k>/pretrain/<method>/<view set>/joint.pt``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

VIEW_ORDER = ("rgb", "flow", "pose", "seg")
JOINT_METHODS = ("cocon", "cpc+sim", "cpc+sync")
DATASET_NAME = r"[A-Za-z0-9_-]+"
VIEW_SET_PATTERN = r"(?:rgb|flow|pose|seg)(?:\+(?:rgb|flow|pose|seg))+"
EXTERNAL = "external"
INIT_PATTERN = (rf"random|{DATASET_NAME}/cpc|{DATASET_NAME}/(?:cocon|cpc\+sim|cpc\+sync)/{VIEW_SET_PATTERN}"
                rf"|{EXTERNAL}/{DATASET_NAME}")


class ExperimentError(ValueError):
    """An initialisation or view set that cannot be built; the message says why."""


def view_set_name(views) -> str:
    """The one name of a set of views: joined by ``+`` in the order rgb, flow, pose, seg."""
    unknown = sorted(set(views) - set(VIEW_ORDER))
    if unknown:
        raise ExperimentError(f"unknown views {unknown}; views are {list(VIEW_ORDER)}")
    if len(set(views)) < 2:
        raise ExperimentError(f"a joint view set needs at least two views, got {list(views)}")
    return "+".join(view for view in VIEW_ORDER if view in views)


@dataclass(frozen=True)
class Init:
    """Where a fine-tuned encoder starts from."""

    method: str                    # random, cpc, a joint method, or external
    source: str | None = None      # the dataset it was pretrained on (None for random); external: its name
    views: tuple[str, ...] = ()    # joint methods: the view set trained together
    view: str | None = None        # external: the one view its encoder reads (None: not known here)

    @property
    def name(self) -> str:
        if self.method == "random":
            return "random"
        if self.method == EXTERNAL:
            return f"{EXTERNAL}/{self.source}"
        if self.method == "cpc":
            return f"{self.source}/cpc"
        return f"{self.source}/{self.method}/{view_set_name(self.views)}"

    @property
    def view_set(self) -> str | None:
        return view_set_name(self.views) if self.views else None

    def provides(self, view: str) -> bool:
        """Whether this initialisation has an encoder for ``view`` (random and cpc: any)."""
        if self.method == EXTERNAL and self.view is not None:
            return view == self.view
        return not self.views or view in self.views


def parse_init(name: str) -> Init:
    if not re.fullmatch(INIT_PATTERN, name):
        raise ExperimentError(f"{name!r} is not an initialisation: random, <dataset>/cpc, "
                              f"<dataset>/<cocon|cpc+sim|cpc+sync>/<view>+<view>... or {EXTERNAL}/<name>")
    if name == "random":
        return Init("random")
    if name.startswith(f"{EXTERNAL}/"):
        return Init(EXTERNAL, name.split("/", 1)[1])
    source, method, *rest = name.split("/")
    if method == "cpc":
        return Init("cpc", source)
    views = tuple(rest[0].split("+"))
    if view_set_name(views) != rest[0]:
        raise ExperimentError(f"{name!r}: write the view set as {view_set_name(views)!r} (views in the order "
                              f"{'+'.join(VIEW_ORDER)}, each once)")
    return Init(method, source, views)


def pretraining_split(init: Init, dataset: str, split: int, datasets: dict[str, dict]) -> int:
    """The split of ``init.source`` whose pretraining a fine-tuning of ``dataset`` on
    ``split`` starts from: the same split on the same dataset (pretraining never sees that
    split's test videos); another dataset's first official split."""
    return split if init.source == dataset else datasets[init.source]["official_splits"][0]


def pretrained_path(init: Init, split: int, view: str) -> str | None:
    """The checkpoint of ``init.source``'s ``split`` that a fine-tuning of ``view`` starts
    from (None for random)."""
    if init.method == "random":
        return None
    if init.method == "cpc":
        return f"results/{init.source}/split{split}/pretrain/cpc/{view}.pt"
    return f"results/{init.source}/split{split}/pretrain/{init.method}/{init.view_set}/joint.pt"


def external_path(dataset: str, name: str) -> str:
    """Where dataset ``dataset`` imports its ``external`` checkpoint ``name``."""
    return f"results/{dataset}/{EXTERNAL}/{name}.pt"


def external_entry(dataset: dict, name: str) -> dict:
    """``dataset``'s ``external`` entry ``name`` as a mapping (a path alone is ``{"path": ...}``)."""
    entry = dataset["external"][name]
    return {"path": entry} if isinstance(entry, str) else entry


def external_init(dataset: dict, name: str) -> Init:
    """The initialisation of ``dataset``'s external checkpoint ``name``, with the view its
    entry says (DPC's files: rgb)."""
    return Init(EXTERNAL, name, view=external_entry(dataset, name).get("view") or "rgb")


def finetune_inits(dataset: dict) -> list[Init]:
    """The initialisations of a dataset's finetune.json: ``finetune.inits``, pretrained on
    ``finetune.pretrained_on`` (default the dataset itself), joint ones on ``finetune.view_set``
    (default every view of the dataset)."""
    return _inits(dataset, dataset["finetune"]["inits"])


def analysis_inits(dataset: dict) -> list[Init]:
    """The initialisations whose frozen encoders the analyses compare: ``analysis.inits``
    (default ``finetune.inits``), pretrained and combined as finetune_inits says."""
    return _inits(dataset, dataset["analysis"]["inits"] or dataset["finetune"]["inits"])


def analysis_split(dataset: dict) -> int:
    """The official split the analyses run on: ``analysis.split``, or the first configured."""
    return dataset["analysis"]["split"] or dataset["official_splits"][0]


def _inits(dataset: dict, methods: list[str]) -> list[Init]:
    settings = dataset["finetune"]
    source = settings["pretrained_on"] or dataset["name"]
    view_set = tuple(settings["view_set"] or dataset["views"])
    inits = []
    for method in methods:
        if method in dataset.get("external", {}):
            inits.append(external_init(dataset, method))
        elif method == "random":
            inits.append(Init("random"))
        elif method == "cpc":
            inits.append(Init("cpc", source))
        else:
            inits.append(Init(method, source, tuple(view for view in VIEW_ORDER if view in view_set)))
    return inits


# ---- the paper's tables (../shared/paper/TABLES.md) as runs -------------------------------

# columns: (evaluated dataset role, view); the roles are "ucf" (the dataset whose paper.md
# it is) and "hmdb" (its paper.hmdb51); rows name an initialisation by role: "self" is the
# dataset itself, "k400" its paper.kinetics400.
TWO_VIEWS = ("rgb", "flow")
FOUR_VIEWS = VIEW_ORDER


@dataclass(frozen=True)
class RowSpec:
    label: str
    method: str
    source: str | None          # None (random), "self" or "k400"
    views: tuple[str, ...]      # joint view set (empty for random and cpc)
    paper: dict                 # column label -> the paper's top-1 (%)
    view: str | None = None     # Table 6: the one view (or "ensemble") the row reports
    not_run: str | None = None  # why our workflow never runs this row (unless released weights fill it)
    released: str | None = None  # the key of paper.released that fills the row from released weights


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    columns: tuple[tuple[str, str, str], ...]   # (label, dataset role, view)
    rows: tuple[RowSpec, ...]
    all_splits: bool = False    # Table 6: the mean over the official splits


TABLES = (
    TableSpec(1, "Loss ablation: RGB and flow pretrained jointly, UCF101 split 1",
              (("RGB", "ucf", "rgb"), ("Flow", "ucf", "flow")),
              (RowSpec("Random", "random", None, (), {"RGB": 46.7, "Flow": 65.3}),
               RowSpec("Lcpc", "cpc", "self", (), {"RGB": 63.7, "Flow": 69.8}),
               RowSpec("Lcpc + sim", "cpc+sim", "self", TWO_VIEWS, {"RGB": 66.0, "Flow": 71.4}),
               RowSpec("Lcpc + sync", "cpc+sync", "self", TWO_VIEWS, {"RGB": 62.7, "Flow": 69.2}),
               RowSpec("Lcocon", "cocon", "self", TWO_VIEWS, {"RGB": 67.8, "Flow": 72.5}))),
    TableSpec(2, "Pretraining dataset: RGB and flow (Kinetics-400 flow is Farneback)",
              (("RGB UCF", "ucf", "rgb"), ("RGB HMDB", "hmdb", "rgb"), ("Flow UCF", "ucf", "flow"),
               ("Flow HMDB", "hmdb", "flow")),
              (RowSpec("Random", "random", None, (),
                       {"RGB UCF": 46.7, "RGB HMDB": 20.6, "Flow UCF": 65.3, "Flow HMDB": 31.2}),
               RowSpec("CPC, K400", "cpc", "k400", (),
                       {"RGB UCF": 68.6, "RGB HMDB": 35.5, "Flow UCF": 69.8, "Flow HMDB": 40.8}),
               RowSpec("CoCon, UCF", "cocon", "self", TWO_VIEWS,
                       {"RGB UCF": 67.8, "RGB HMDB": 37.7, "Flow UCF": 72.5, "Flow HMDB": 44.1}),
               RowSpec("CoCon, K400", "cocon", "k400", TWO_VIEWS,
                       {"RGB UCF": 72.1, "RGB HMDB": 46.5, "Flow UCF": 71.8, "Flow HMDB": 44.2}))),
    TableSpec(3, "Four views (RGB, flow, pose heatmaps, segmentation masks), pretrained on UCF101",
              tuple((f"{label} {column}", role, view)
                    for view, label in zip(FOUR_VIEWS, ("RGB", "Flow", "PoseHM", "SegMask"))
                    for column, role in (("UCF", "ucf"), ("HMDB", "hmdb"))),
              (RowSpec("Random", "random", None, (),
                       {"RGB UCF": 46.7, "RGB HMDB": 20.6, "Flow UCF": 65.3, "Flow HMDB": 31.2,
                        "PoseHM UCF": 51.7, "PoseHM HMDB": 33.0, "SegMask UCF": 42.7, "SegMask HMDB": 26.3}),
               RowSpec("CPC", "cpc", "self", (),
                       {"RGB UCF": 63.7, "RGB HMDB": 33.1, "Flow UCF": 71.2, "Flow HMDB": 44.6,
                        "PoseHM UCF": 56.4, "PoseHM HMDB": 42.0, "SegMask UCF": 53.7, "SegMask HMDB": 32.8}),
               RowSpec("CoCon", "cocon", "self", FOUR_VIEWS,
                       {"RGB UCF": 71.0, "RGB HMDB": 39.0, "Flow UCF": 74.5, "Flow HMDB": 45.4,
                        "PoseHM UCF": 58.7, "PoseHM HMDB": 42.6, "SegMask UCF": 55.8, "SegMask HMDB": 34.0}))),
    TableSpec(5, "Number of views, pretrained on UCF101",
              (("RGB UCF", "ucf", "rgb"), ("RGB HMDB", "hmdb", "rgb"), ("Flow UCF", "ucf", "flow"),
               ("Flow HMDB", "hmdb", "flow")),
              (RowSpec("2 views", "cocon", "self", TWO_VIEWS,
                       {"RGB UCF": 67.8, "RGB HMDB": 37.7, "Flow UCF": 72.5, "Flow HMDB": 44.1}),
               RowSpec("4 views", "cocon", "self", FOUR_VIEWS,
                       {"RGB UCF": 71.0, "RGB HMDB": 39.0, "Flow UCF": 74.5, "Flow HMDB": 45.4}))),
    TableSpec(6, "Comparison, top-1 averaged over the official splits (ResNet18 at 128 px unless the row says "
                 "otherwise)",
              (("UCF101", "ucf", "row"), ("HMDB51", "hmdb", "row")),
              (RowSpec("Random init, RGB", "random", None, (), {"UCF101": 46.7, "HMDB51": 20.6}, view="rgb"),
               RowSpec("DPC (our CPC), RGB, UCF101", "cpc", "self", (), {"UCF101": 60.6}, view="rgb",
                       released="dpc_ucf101"),
               RowSpec("CoCon RGB, 4 views, UCF101", "cocon", "self", FOUR_VIEWS,
                       {"UCF101": 70.5, "HMDB51": 38.4}, view="rgb"),
               RowSpec("CoCon ensemble, 4 views, UCF101", "cocon", "self", FOUR_VIEWS,
                       {"UCF101": 82.4, "HMDB51": 52.0}, view="ensemble"),
               RowSpec("DPC (our CPC), RGB, K400", "cpc", "k400", (), {"UCF101": 68.2, "HMDB51": 34.5}, view="rgb",
                       released="dpc_k400"),
               RowSpec("CoCon RGB, 2 views, K400", "cocon", "k400", TWO_VIEWS,
                       {"UCF101": 71.6, "HMDB51": 46.0}, view="rgb"),
               RowSpec("CoCon ensemble, 2 views, K400", "cocon", "k400", TWO_VIEWS,
                       {"UCF101": 78.1, "HMDB51": 52.0}, view="ensemble"),
               RowSpec("DPC, ResNet34 at 224 px, K400", "cpc", "k400", (), {"UCF101": 75.7, "HMDB51": 35.7},
                       view="rgb", released="dpc_k400_r34",
                       not_run="ResNet34 at 224 px is another protocol (about 6 weeks of pretraining on 4 GPUs, DPC "
                               "says): name DPC's released weights in paper.released.dpc_k400_r34"),
               RowSpec("CoCon ensemble, ResNet34 at 224 px, K400", "cocon", "k400", TWO_VIEWS,
                       {"UCF101": 82.0, "HMDB51": 53.1}, view="ensemble",
                       not_run="ResNet34 at 224 px is another protocol; set pretrain.backbone and input_size "
                               "in a dataset of its own")),
              all_splits=True),
)


@dataclass(frozen=True)
class Cell:
    """One cell of a table: our number comes from the fine-tuning runs ``runs`` (one per
    split), or the cell is not run, for ``reason``."""

    table: int
    row: str
    column: str
    paper: float | None
    dataset: str | None = None
    init: str | None = None
    view: str | None = None            # a view, or "ensemble" (of the init's views)
    ensemble_views: tuple[str, ...] = ()
    splits: tuple[int, ...] = ()
    reason: str | None = None
    released: str | None = None        # the external checkpoint the cell's encoder comes from
    released_path: str | None = None   # its file, as the evaluated dataset's config names it

    @property
    def run(self) -> bool:
        return self.reason is None

    def scores(self) -> list[str]:
        """The fine-tuning scores files the cell reads."""
        views = self.ensemble_views if self.view == "ensemble" else (self.view,)
        return [f"results/{self.dataset}/split{split}/finetune/{self.init}/{view}.scores.npz"
                for split in self.splits for view in views]


def paper_cells(name: str, datasets: dict[str, dict]) -> list[Cell]:
    """Every cell of the paper's tables for ``results/<name>/paper.md``: the runs it needs,
    or why it is not run. ``datasets``: every configured dataset by name."""
    dataset = datasets[name]
    settings = dataset["paper"]
    roles = {"ucf": name, "hmdb": settings["hmdb51"]}
    sources = {"self": name, "k400": settings["kinetics400"]}
    for key, other in (("hmdb51", settings["hmdb51"]), ("kinetics400", settings["kinetics400"])):
        if other is not None and other not in datasets:
            raise ExperimentError(f"paper.{key}: {other!r} is not one of the datasets {sorted(datasets)}")
    cells = []
    for table in TABLES:
        for row in table.rows:
            for label, role, column_view in table.columns:
                view = row.view if column_view == "row" else column_view
                cell = Cell(table.number, row.label, label, row.paper.get(label))
                evaluated = roles[role]
                source = sources.get(row.source) if row.source else None
                released = settings["released"].get(row.released) if row.released else None
                reason = None
                if table.number not in settings["tables"]:
                    reason = f"table {table.number} is not in paper.tables"
                elif released is not None:
                    reason, cell = _released_cell(cell, table, datasets, evaluated, released, view, role)
                    cells.append(cell if reason is None else Cell(table.number, row.label, label,
                                                                  row.paper.get(label), reason=reason))
                    continue
                elif row.not_run:
                    reason = row.not_run
                elif evaluated is None:
                    reason = "paper.hmdb51 is null"
                elif row.source == "k400" and source is None:
                    reason = "paper.kinetics400 is null"
                if reason is None:
                    init = Init(row.method, source, row.views)
                    target, origin = datasets[evaluated], datasets.get(source) if source else None
                    views = row.views or (tuple(view for view in VIEW_ORDER if view in target["views"])
                                          if view == "ensemble" else ())
                    needed = views if view == "ensemble" else (view,)
                    missing = [need for need in needed
                               if need not in target["views"] or (origin and need not in origin["views"])]
                    # a joint row pretrains its whole view set on the source
                    missing += [need for need in row.views
                                if origin and need not in origin["views"] and need not in missing]
                    if missing:
                        reason = f"view(s) {missing} not in the views of {evaluated if origin is None else source}"
                    else:
                        splits = tuple(target["official_splits"]) if table.all_splits else \
                            (target["official_splits"][0],)
                        cell = Cell(table.number, row.label, label, row.paper.get(label), evaluated, init.name, view,
                                    views if view == "ensemble" else (), splits)
                cells.append(cell if reason is None else Cell(table.number, row.label, label,
                                                              row.paper.get(label), reason=reason))
    return cells


def _released_cell(cell: Cell, table: TableSpec, datasets: dict[str, dict], evaluated: str | None, name: str,
                   view: str, role: str) -> tuple[str | None, Cell]:
    """A cell of a row that paper.released fills from the external checkpoint ``name`` of
    the evaluated dataset: the cell, or why it is not run."""
    if evaluated is None:
        return "paper.hmdb51 is null", cell
    target = datasets[evaluated]
    if name not in target["external"]:
        where = "paper.hmdb51's dataset" if role == "hmdb" else "this dataset"
        return f"released weights {name!r}: {where} ({evaluated}) names no external checkpoint {name!r}", cell
    init = external_init(target, name)
    if not init.provides(view) or view not in target["views"]:
        return (f"released weights {name!r} read {init.view}, and the row is {view} of the views "
                f"{target['views']} of {evaluated}"), cell
    splits = tuple(target["official_splits"]) if table.all_splits else (target["official_splits"][0],)
    return None, Cell(cell.table, cell.row, cell.column, cell.paper, evaluated, init.name, view, (), splits,
                      released=name, released_path=external_entry(target, name)["path"])
