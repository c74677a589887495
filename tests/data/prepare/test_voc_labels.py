"""VOC 2012 image-level labels from XML annotations (and the mask fallback)."""
import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.prepare.voc_labels import labels_from_mask, labels_from_xml, voc_image_labels
from tests.helpers import slow, tool_namespace

# The 20 VOC classes in alphabetical order: segmentation id = position in this list + 1 (0 = background).
VOC20 = """aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike
person pottedplant sheep sofa train tvmonitor""".split()


def object_xml(name, difficult=0, parts=()):
    part_xml = "".join(f"<part><name>{part}</name><bndbox/></part>" for part in parts)
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>1</truncated>"
        f"<difficult>{difficult}</difficult><bndbox/>{part_xml}</object>"
    )


def annotation_xml(objects):
    return (
        "<annotation><folder>VOC2012</folder><filename>x.jpg</filename>"
        "<size><width>5</width><height>4</height><depth>3</depth></size>"
        f"{''.join(objects)}</annotation>"
    )


class TestVocImageLabels(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.voc = os.path.join(self.root, "VOCdevkit", "VOC2012")
        self.xml = {
            # difficult person, parts (head, hand) ignored, whitespace around a name, duplicates
            "2007_000032": [
                object_xml("person", difficult=1, parts=("head", "hand")),
                object_xml("\n  dog "),
                object_xml("dog"),
            ],
            "2007_000033": [object_xml("diningtable"), object_xml("tvmonitor", parts=("foot",))],
            "2008_000001": [object_xml("aeroplane")],
            "2008_000002": [object_xml("cat")],  # in neither list: not written
        }
        os.makedirs(os.path.join(self.voc, "Annotations"))
        for image_id, objects in self.xml.items():
            with open(os.path.join(self.voc, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(annotation_xml(objects))
        split_dir = os.path.join(self.voc, "ImageSets", "Segmentation")
        os.makedirs(split_dir)
        with open(os.path.join(split_dir, "train_aug.txt"), "w") as f:
            f.write("2007_000032\n2008_000001\n")
        with open(os.path.join(split_dir, "val.txt"), "w") as f:
            f.write("2007_000033\n2008_000001")  # overlap and no trailing newline

    def tearDown(self):
        self._tmp.cleanup()

    def expected(self):
        return {
            "2007_000032": sorted([VOC20.index("person") + 1, VOC20.index("dog") + 1]),
            "2007_000033": sorted([VOC20.index("diningtable") + 1, VOC20.index("tvmonitor") + 1]),
            "2008_000001": [VOC20.index("aeroplane") + 1],
        }

    def test_xml_labels(self):
        path = os.path.join(self.voc, "Annotations", "2007_000032.xml")
        self.assertEqual(labels_from_xml(path), self.expected()["2007_000032"])
        self.assertEqual(voc_image_labels(self.voc, workers=1), self.expected())

    @slow
    def test_command_line_writes_json(self):
        main = tool_namespace("prepare_image_labels.py")["main"]
        main(["voc", "--workers", "2", self.root])
        with open(os.path.join(self.voc, "image_labels.json")) as f:
            self.assertEqual(json.load(f), self.expected())

    def test_from_masks(self):
        mask_dir = os.path.join(self.voc, "SegmentationClassAug")
        os.makedirs(mask_dir)
        masks = {
            "2007_000032": np.array([[0, 15, 255], [12, 12, 0]]),
            "2007_000033": np.array([[11, 20, 0], [0, 0, 0]]),
            "2008_000001": np.array([[1, 255, 255], [0, 0, 0]]),
        }
        for image_id, mask in masks.items():
            Image.fromarray(mask.astype(np.uint8)).save(os.path.join(mask_dir, f"{image_id}.png"))
        # A palette PNG keeps its indices (its grey rendering would not be 1..20).
        mask = masks["2007_000032"].astype(np.uint8)
        palette = Image.frombytes("P", mask.shape[::-1], mask.tobytes())
        palette.putpalette([c for i in range(256) for c in (i * 7 % 256, i * 3 % 256, 200)])
        palette_path = os.path.join(self.root, "palette.png")
        palette.save(palette_path)
        self.assertEqual(labels_from_mask(palette_path), [12, 15])
        self.assertEqual(voc_image_labels(self.voc, from_masks=True), self.expected())

    def test_mask_with_foreign_value_is_reported(self):
        path = os.path.join(self.root, "bad.png")
        Image.fromarray(np.array([[0, 21]], dtype=np.uint8)).save(path)
        with self.assertRaisesRegex(ValueError, "bad.png"):
            labels_from_mask(path)

    def test_broken_xml_names_the_file(self):
        path = os.path.join(self.voc, "Annotations", "2008_000001.xml")
        with open(path, "w") as f:
            f.write("<annotation><object>")
        with self.assertRaisesRegex(ValueError, "2008_000001.xml"):
            voc_image_labels(self.voc)

    def test_missing_inputs_explain_download(self):
        os.remove(os.path.join(self.voc, "Annotations", "2008_000001.xml"))
        with self.assertRaises(FileNotFoundError) as raised:
            voc_image_labels(self.voc)
        self.assertIn(os.path.join("Annotations", "2008_000001.xml"), str(raised.exception))
        self.assertIn("VOCtrainval_11-May-2012.tar", str(raised.exception))

        os.remove(os.path.join(self.voc, "ImageSets", "Segmentation", "train_aug.txt"))
        with self.assertRaises(FileNotFoundError) as raised:
            voc_image_labels(self.voc)
        self.assertIn("train_aug.txt", str(raised.exception))
        self.assertIn("SBD", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
