"""Register every dataset of :data:`LAYOUTS` with Detectron2's catalogs."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from .builtin_meta import pascal_colormap
from .layouts import LAYOUTS, SemSegLayout
from .loader import default_datasets_root, load_sem_seg_records


def register_sem_seg_layout(layout: SemSegLayout, root: str, name: str = None) -> None:
    """Register one layout under ``name`` (default: the layout's own name), lazily loaded."""
    name = name or layout.name
    DatasetCatalog.register(
        name, lambda layout=layout, root=root, name=name: load_sem_seg_records(layout, root, name)
    )
    start = layout.palette_start
    metadata = dict(
        stuff_classes=list(layout.classes),
        stuff_colors=pascal_colormap(start + len(layout.classes))[start:],
        ignore_label=255,
        evaluator_type="sem_seg",
        image_root=f"{root}/{layout.image_dir}",
        class_names_file=layout.class_names_file,
    )
    if layout.label_dir is not None:
        metadata["sem_seg_root"] = f"{root}/{layout.label_dir}"
    MetadataCatalog.get(name).set(**metadata)


def register_all_cdam_datasets(root: str = None) -> None:
    """Register all ``cdam_*`` datasets under ``root`` (default ``$DETECTRON2_DATASETS``).

    ``import cdam_d2`` calls this with the default root. Calling it again without a root leaves
    registered names alone; an explicit ``root`` re-points every ``cdam_*`` name to it.
    """
    explicit_root = root is not None
    root = root if explicit_root else default_datasets_root()
    for name, layout in LAYOUTS.items():
        if name in DatasetCatalog.list():
            if not explicit_root:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_sem_seg_layout(layout, root)
