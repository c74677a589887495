#!/usr/bin/env python
"""Write PASCAL VOC 2012 test-set predictions in the evaluation server's layout, ready to upload.

    python tools/export_voc_test.py --config-file configs/clustercam_voc.yaml --output submission/ \
        MODEL.WEIGHTS output/clustercam_voc/model_final.pth

Any config of this package works: CDAM (training-free: no weights needed), ClusterCAM, or a second-stage
DeepLab (configs/second_stage/). Each image of the test split (``cdam_voc21_sem_seg_test``) is predicted
with the method's own test pipeline (the one its evaluation uses: resize, scales, CRF) and written as a
palette PNG (VOC colours, values 0..20) at the image's size to

    <output>/results/VOC2012/Segmentation/<competition>_test_cls/<image_id>.png

then ``<output>/results.tar.gz`` (holding ``results/...``) is written for upload. comp6 is the usual
competition for methods that use outside data such as ImageNet-pretrained backbones (comp5: VOC data only).
Each PNG is written to a temporary name and renamed; a re-run skips the PNGs that decode completely at
their image's size, so an interrupted export resumes. The archive is written only once every image is done.
"""
import argparse
import contextlib
import logging
import os
import tarfile

logger = logging.getLogger("cdam_d2.export_voc_test")

VOC_NUM_CLASSES = 21


def parse_args(argv=None):
    from cdam_d2.engine.cli import add_unsafe_config_flag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="folder that receives results/ and results.tar.gz")
    parser.add_argument("--dataset", default="cdam_voc21_sem_seg_test", help="registered VOC-class dataset")
    parser.add_argument("--competition", choices=("comp5", "comp6"), default="comp6")
    add_unsafe_config_flag(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS path")
    return parser.parse_args(argv)


def results_dir(output_dir, competition):
    return os.path.join(output_dir, "results", "VOC2012", "Segmentation", f"{competition}_test_cls")


def write_archive(output_dir, png_dir, file_names):
    """``<output_dir>/results.tar.gz`` holding ``png_dir`` (inside ``output_dir``) with exactly
    ``file_names``, stored relative to ``output_dir`` after their parent folders, as
    ``tar czf results.tar.gz results`` would store them."""
    from cdam_d2.utils.files import write_atomically

    parts = os.path.relpath(png_dir, output_dir).split(os.sep)
    folders = [os.path.join(*parts[:depth]) for depth in range(1, len(parts) + 1)]
    members = folders + [os.path.join(folders[-1], name) for name in file_names]
    archive = os.path.join(output_dir, "results.tar.gz")

    def write(temp_path):
        with tarfile.open(temp_path, "w:gz") as tar:
            for name in members:
                tar.add(os.path.join(output_dir, name), arcname=name, recursive=False)

    write_atomically(archive, write)
    return archive


@contextlib.contextmanager
def prediction_context(cfg, model):
    """What :meth:`cdam_d2.engine.Trainer.test` enters around inference: the method's
    ``evaluation_context`` (worker pools, ...), eval mode and ``torch.no_grad``."""
    import torch
    from detectron2.evaluation.evaluator import inference_context

    from cdam_d2.engine import Trainer

    with Trainer.evaluation_context(cfg, model), inference_context(model), torch.no_grad():
        yield


def export(cfg, dataset_name, output_dir, competition="comp6"):
    """Predict every image of ``dataset_name``, write the PNGs and the archive.

    Returns (written, skipped, archive path).
    """
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cdam_d2.data.datasets.builtin_meta import voc_palette_bytes
    from cdam_d2.data.label_export import LabelPNGWriter, export_label_maps
    from cdam_d2.engine import Trainer
    from cdam_d2.engine.checkpoint import CoveringCheckpointer
    from cdam_d2.evaluation.metrics import argmax_labels

    num_classes = len(MetadataCatalog.get(dataset_name).stuff_classes)
    if num_classes != VOC_NUM_CLASSES:
        raise ValueError(f"Dataset '{dataset_name}' has {num_classes} classes; the VOC server expects the "
                         f"{VOC_NUM_CLASSES} VOC classes (e.g. --dataset cdam_voc21_sem_seg_test).")
    records = DatasetCatalog.get(dataset_name)
    model = Trainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        CoveringCheckpointer.from_cfg(model, cfg).load(cfg.MODEL.WEIGHTS)
    elif any(p.requires_grad for p in model.parameters()):
        logger.warning("MODEL.WEIGHTS is empty: exporting the predictions of an untrained model.")

    def predict(inputs):
        labels = []
        for inp, out in zip(inputs, model(inputs)):
            scores = out["sem_seg"]
            if scores.shape[0] != VOC_NUM_CLASSES:
                raise ValueError(f"The model predicts {scores.shape[0]} classes for '{inp['file_name']}'; "
                                 f"the VOC server expects {VOC_NUM_CLASSES} (check DATASETS.TEST / NUM_CLASSES).")
            labels.append(argmax_labels(scores).to(dtype=torch.uint8, device="cpu").numpy())
        return labels

    writer = LabelPNGWriter(results_dir(output_dir, competition), palette=voc_palette_bytes())
    loader = Trainer.build_test_loader(cfg, dataset_name)  # the method's own test mapper
    with prediction_context(cfg, model):
        written, skipped = export_label_maps(loader, writer, predict, len(records), f"{competition} {dataset_name}")
    unfinished = [writer.path_for(r) for r in records if not writer.is_finished(r)]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} of {len(records)} predictions are missing or damaged after the "
                           f"export (e.g. {unfinished[:3]}); run the export again. No archive was written.")
    archive = write_archive(output_dir, writer.output_dir, [os.path.basename(writer.path_for(r)) for r in records])
    return written, skipped, archive


def main(argv=None):
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from cdam_d2.second_stage.config import add_second_stage_config
    from cdam_d2.engine import load_cfg

    setup_logger(name="cdam_d2")
    # The second-stage keys are a superset: CDAM, ClusterCAM and DeepLab configs all load.
    cfg, fallbacks = load_cfg(args.config_file, args.opts, allow_unsafe_yaml=args.allow_unsafe_config,
                              add_config=add_second_stage_config)
    for message in fallbacks:
        logger.warning(message)
    cfg.freeze()
    written, skipped, archive = export(cfg, args.dataset, args.output, args.competition)
    logger.info("wrote %d predictions (%d already present); upload %s", written, skipped, archive)


if __name__ == "__main__":
    main()
