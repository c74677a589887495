"""COCO-Object (stuffthingmaps and instances) and COCO-2014 preparation on tiny synthetic inputs."""
import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from cdam_d2.data.prepare.coco14 import coco14_image_labels, write_coco14_label_pngs
from cdam_d2.data.prepare.coco_object import (
    convert_stuffthingmap,
    images_without_labels,
    prepare_from_instances,
    prepare_from_stuffthingmaps,
)
from cdam_d2.utils.files import temp_path_for
from tests.helpers import slow, tool_namespace

# The 80 COCO category ids: 1..90 without the ten that have no annotations.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def uncompressed_rle(mask):
    """COCO uncompressed RLE written from scratch: column-major runs, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def rectangle(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def read_png(path):
    return np.array(Image.open(path))


class SyntheticInstances:
    """A COCO instances json with overlapping, crowd-only and unannotated images.

    Categories are listed unsorted (90, 1, 18, 3) so the contiguous ids must come from sorting:
    1 -> 1, 3 -> 2, 18 -> 3, 90 -> 4.
    """

    height, width = 12, 10
    label_of_category = {1: 1, 3: 2, 18: 3, 90: 4}

    def __init__(self, split):
        h, w = self.height, self.width
        polygon = [[0.0, 0.0, 9.0, 0.0, 9.0, 7.0, 0.0, 7.0]]  # category 18, painted first
        self.mask_a = rectangle(h, w, 2, 8, 1, 6)  # category 90, overwrites the polygon
        self.mask_b = rectangle(h, w, 5, 11, 4, 9)  # category 3, overwrites part of a
        self.crowd = rectangle(h, w, 0, 12, 0, 3)  # category 1, crowd: never painted
        compressed_b = mask_utils.encode(np.asfortranarray(self.mask_b.astype(np.uint8)))
        compressed_b["counts"] = compressed_b["counts"].decode("ascii")
        self.polygon_mask = mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(polygon, h, w))
        ).astype(bool)
        self.names = [f"COCO_{split}_{i:012d}" for i in (7, 3, 5)]
        annotation = dict(iscrowd=0, area=1.0, bbox=[0, 0, 1, 1])
        self.data = {
            "images": [
                {"id": 7, "file_name": f"{self.names[0]}.jpg", "height": h, "width": w},
                {"id": 3, "file_name": f"{self.names[1]}.jpg", "height": h, "width": w},
                {"id": 5, "file_name": f"{self.names[2]}.jpg", "height": h, "width": w},
            ],
            "annotations": [
                dict(annotation, id=1, image_id=7, category_id=18, segmentation=polygon),
                dict(annotation, id=2, image_id=7, category_id=90,
                     segmentation=uncompressed_rle(self.mask_a)),
                dict(annotation, id=3, image_id=7, category_id=3, segmentation=compressed_b),
                dict(annotation, id=4, image_id=7, category_id=1, iscrowd=1,
                     segmentation=uncompressed_rle(self.crowd)),
                dict(annotation, id=5, image_id=3, category_id=90, iscrowd=1,
                     segmentation=uncompressed_rle(self.crowd)),
            ],
            "categories": [{"id": i, "name": f"c{i}"} for i in (90, 1, 18, 3)],
        }  # fmt: skip

    def expected_label_map(self):
        """Image 7: paint in list order, skipping the crowd annotation."""
        expected = np.zeros((self.height, self.width), dtype=np.uint8)
        expected[self.polygon_mask] = self.label_of_category[18]
        expected[self.mask_a] = self.label_of_category[90]
        expected[self.mask_b] = self.label_of_category[3]
        return expected

    def save(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.data, f)


class TestStuffThingMapping(unittest.TestCase):
    def expected_label(self, raw):
        """The COCO-Object label of a raw stuffthingmap value (= COCO-Stuff id - 1): things by their order among
        the 80 category ids (1..80), stuff (91..181) and unlabelled (255) as background 0."""
        if raw + 1 in COCO_CATEGORY_IDS:
            return COCO_CATEGORY_IDS.index(raw + 1) + 1
        if 91 <= raw <= 181 or raw == 255:
            return 0
        return None  # not in the table

    def test_all_256_values(self):
        valid = [v for v in range(256) if self.expected_label(v) is not None]
        self.assertEqual(len(valid), 80 + 91 + 1)
        raw = np.array(valid, dtype=np.uint8).reshape(1, -1)
        converted = convert_stuffthingmap(raw)
        self.assertEqual(converted.dtype, np.uint8)
        self.assertEqual(converted.tolist()[0], [self.expected_label(v) for v in valid])
        for value in sorted(set(range(256)) - set(valid)):
            with self.assertRaisesRegex(ValueError, str(value)):
                convert_stuffthingmap(np.array([[0, value]], dtype=np.uint8))

    def test_spec_examples(self):
        raw = np.array([[0, 1, 10, 12, 89, 255, 91, 181]], dtype=np.uint8)
        self.assertEqual(convert_stuffthingmap(raw).tolist(), [[1, 2, 11, 12, 80, 0, 0, 0]])
        things = np.array([c - 1 for c in COCO_CATEGORY_IDS], dtype=np.uint8)[None]
        self.assertEqual(convert_stuffthingmap(things).tolist(), [list(range(1, 81))])


class TestCocoObjectFromStuffThingMaps(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.coco_stuff = os.path.join(self._tmp.name, "coco_stuff164k")
        self.annotation_dir = os.path.join(self.coco_stuff, "annotations", "val2017")
        rng = np.random.default_rng(0)
        thing_values = [c - 1 for c in COCO_CATEGORY_IDS]
        pool = np.array(thing_values + list(range(91, 182)) + [255])
        self.raw = {i: rng.choice(pool, size=(6, 7)) for i in ("000000000001", "000000000002")}
        for image_id, raw in self.raw.items():
            write_png(os.path.join(self.annotation_dir, f"{image_id}.png"), raw)
        # Another converter's output must be left alone (its values are not raw values).
        write_png(os.path.join(self.annotation_dir, "000000000001_labelTrainIds.png"),
                  np.full((6, 7), 200))  # fmt: skip

    def tearDown(self):
        self._tmp.cleanup()

    def output(self, image_id):
        return os.path.join(self.annotation_dir, f"{image_id}_instanceTrainIds.png")

    @slow
    def test_converts_every_map_and_skips_train_ids_files(self):
        summary = prepare_from_stuffthingmaps(self.coco_stuff, "val2017", workers=2)
        self.assertEqual((summary.written, summary.skipped), (2, 0))
        for image_id, raw in self.raw.items():
            label = read_png(self.output(image_id))
            np.testing.assert_array_equal(label, convert_stuffthingmap(raw))
        self.assertFalse(os.path.exists(self.output("000000000001_labelTrainIds")))

    def test_resume_skips_finished_and_redoes_leftover_temp(self):
        write_png(self.output("000000000001"), np.full((6, 7), 42))  # finished earlier
        leftover = temp_path_for(self.output("000000000002"))
        with open(leftover, "w") as f:
            f.write("interrupted")
        summary = prepare_from_stuffthingmaps(self.coco_stuff, "val2017", workers=1)
        self.assertEqual((summary.written, summary.skipped), (1, 1))
        np.testing.assert_array_equal(read_png(self.output("000000000001")), 42)
        np.testing.assert_array_equal(
            read_png(self.output("000000000002")), convert_stuffthingmap(self.raw["000000000002"])
        )
        self.assertFalse(os.path.exists(leftover))

    def test_bad_value_names_the_file(self):
        write_png(os.path.join(self.annotation_dir, "000000000003.png"), np.full((2, 2), 90))
        with self.assertRaisesRegex(ValueError, "000000000003.png.*90"):
            prepare_from_stuffthingmaps(self.coco_stuff, "val2017", workers=1)

    def test_missing_folder_explains_download(self):
        with self.assertRaises(FileNotFoundError) as raised:
            prepare_from_stuffthingmaps(self.coco_stuff, "train2017")
        missing = os.path.join(self.coco_stuff, "annotations", "train2017")
        self.assertIn(missing, str(raised.exception))
        self.assertIn("stuffthingmaps_trainval2017.zip", str(raised.exception))


class TestCocoObjectFromInstances(unittest.TestCase):
    def test_later_annotations_win_and_crowd_is_not_painted(self):
        with tempfile.TemporaryDirectory() as root:
            coco_stuff = os.path.join(root, "coco_stuff164k")
            synthetic = SyntheticInstances("val2017")
            json_path = os.path.join(coco_stuff, "annotations", "instances_val2017.json")
            synthetic.save(json_path)
            summary = prepare_from_instances(coco_stuff, "val2017", json_path, workers=1)
            self.assertEqual((summary.written, summary.skipped), (3, 0))  # every image
            out_dir = os.path.join(coco_stuff, "annotations", "val2017")
            labels = {
                name: read_png(os.path.join(out_dir, f"{name}_instanceTrainIds.png"))
                for name in synthetic.names
            }
            expected = synthetic.expected_label_map()
            np.testing.assert_array_equal(labels[synthetic.names[0]], expected)
            self.assertEqual(labels[synthetic.names[1]].max(), 0)  # crowd only
            self.assertEqual(labels[synthetic.names[2]].max(), 0)  # no annotation
            self.assertEqual(labels[synthetic.names[0]].shape, (synthetic.height, synthetic.width))

            images = os.path.join(coco_stuff, "images", "val2017")
            for name in synthetic.names + ["000000000099"]:
                write_png(os.path.join(images, f"{name}.jpg"), np.zeros((2, 2)))
            self.assertEqual(images_without_labels(coco_stuff, "val2017"), ["000000000099"])

    def test_both_sources_agree_on_the_class_order(self):
        """A thing mask with raw value id-1 converts to the same label as the instance rasterised
        with contiguous id = rank of the category id."""
        h, w = 5, 6
        categories = [{"id": i, "name": str(i)} for i in COCO_CATEGORY_IDS]
        with tempfile.TemporaryDirectory() as root:
            coco_stuff = os.path.join(root, "coco_stuff164k")
            for category_id in (1, 13, 44, 90):
                raw = np.full((h, w), 120, dtype=np.uint8)  # stuff
                mask = rectangle(h, w, 1, 4, 2, 5)
                raw[mask] = category_id - 1
                data = {
                    "images": [{"id": 1, "file_name": "x.jpg", "height": h, "width": w}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": category_id,
                                     "iscrowd": 0, "segmentation": uncompressed_rle(mask)}],
                    "categories": categories,
                }  # fmt: skip
                json_path = os.path.join(root, f"instances_{category_id}.json")
                with open(json_path, "w") as f:
                    json.dump(data, f)
                split = f"split{category_id}"
                prepare_from_instances(coco_stuff, split, json_path, workers=1)
                from_instances = read_png(
                    os.path.join(coco_stuff, "annotations", split, "x_instanceTrainIds.png")
                )
                np.testing.assert_array_equal(from_instances, convert_stuffthingmap(raw))

    def test_missing_json_explains_download(self):
        with tempfile.TemporaryDirectory() as root:
            json_path = os.path.join(root, "instances_val2017.json")
            with self.assertRaises(FileNotFoundError) as raised:
                prepare_from_instances(root, "val2017", json_path)
            self.assertIn(json_path, str(raised.exception))
            self.assertIn("cocodataset.org", str(raised.exception))

    def test_broken_json_names_the_file(self):
        with tempfile.TemporaryDirectory() as root:
            json_path = os.path.join(root, "instances_val2017.json")
            with open(json_path, "w") as f:
                f.write('{"images": [')
            with self.assertRaisesRegex(ValueError, "instances_val2017.json"):
                prepare_from_instances(root, "val2017", json_path)

    def test_unknown_category_is_reported(self):
        synthetic = SyntheticInstances("val2017")
        synthetic.data["annotations"][0]["category_id"] = 77
        with tempfile.TemporaryDirectory() as root:
            json_path = os.path.join(root, "instances_val2017.json")
            synthetic.save(json_path)
            with self.assertRaisesRegex(ValueError, "category_id 77"):
                prepare_from_instances(root, "val2017", json_path)


class TestCoco14(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.instances_dir = os.path.join(self.root, "COCO14", "annotations")
        self.synthetic = {split: SyntheticInstances(split) for split in ("train2014", "val2014")}
        for split, synthetic in self.synthetic.items():
            synthetic.save(os.path.join(self.instances_dir, f"instances_{split}.json"))

    def tearDown(self):
        self._tmp.cleanup()

    def test_image_labels_and_split_lists(self):
        labels, names_of_split = coco14_image_labels(self.instances_dir)
        for split, synthetic in self.synthetic.items():
            full, crowd_only, unannotated = synthetic.names
            # An image label is any category with an instance annotation, crowd annotations included.
            self.assertEqual(labels[full], [1, 2, 3, 4])
            self.assertEqual(labels[crowd_only], [4])
            self.assertNotIn(unannotated, labels)
            self.assertEqual(names_of_split[split], sorted([full, crowd_only]))
        self.assertEqual(len(labels), 4)

    @slow
    def test_command_line_writes_labels_lists_and_masks(self):
        labels_tool = tool_namespace("prepare_image_labels.py")["main"]
        labels_tool(["coco", self.root, "--instances-dir", self.instances_dir, "--workers", "1"])
        coco14 = os.path.join(self.root, "COCO14")
        with open(os.path.join(coco14, "image_labels.json")) as f:
            labels = json.load(f)
        expected_labels, names_of_split = coco14_image_labels(self.instances_dir)
        self.assertEqual(labels, expected_labels)
        for split, names in names_of_split.items():
            with open(os.path.join(coco14, "ImageSets", f"{split}.txt")) as f:
                self.assertEqual(f.read().splitlines(), names)

        masks_tool = tool_namespace("prepare_coco14.py")["main"]
        masks_tool([self.root, "--workers", "2"])  # default split val2014, default instances dir
        mask_dir = os.path.join(coco14, "SegmentationClass", "val2014")
        expected_files = [f"{name}.png" for name in names_of_split["val2014"]]
        self.assertEqual(sorted(os.listdir(mask_dir)), expected_files)
        synthetic = self.synthetic["val2014"]
        mask = read_png(os.path.join(mask_dir, f"{synthetic.names[0]}.png"))
        np.testing.assert_array_equal(mask, synthetic.expected_label_map())
        self.assertLess(mask.max(), 255)

        summary = write_coco14_label_pngs(coco14, self.instances_dir, "val2014")
        self.assertEqual((summary.written, summary.skipped), (0, 2))  # re-run: all finished

    def test_inconsistent_categories_are_reported(self):
        synthetic = self.synthetic["val2014"]
        synthetic.data["categories"].append({"id": 5, "name": "extra"})
        synthetic.save(os.path.join(self.instances_dir, "instances_val2014.json"))
        with self.assertRaisesRegex(ValueError, "instances_val2014.json"):
            coco14_image_labels(self.instances_dir)


if __name__ == "__main__":
    unittest.main()
