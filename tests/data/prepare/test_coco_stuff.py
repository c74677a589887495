"""COCO-Stuff 171 labels from stuffthingmaps."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.prepare.coco_stuff import coco_stuff171_mapping, prepare_coco_stuff171
from tests.helpers import tool_namespace

# The COCO-Stuff ids that no annotation uses: ten thing ids and 91 (stuff starts at 92).
UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
# Entries of MMSegmentation's coco_stuff164k.py table (raw value -> train id).
MMSEG_EXAMPLES = {0: 0, 10: 10, 12: 11, 26: 24, 27: 25, 30: 26, 89: 79, 91: 80, 92: 81, 181: 170}


class CocoStuff171Test(unittest.TestCase):
    def expected(self, raw):
        """Label from the COCO-Stuff ids: rank of id = raw + 1 among the 171 used ids."""
        used_ids = [i for i in range(1, 183) if i not in UNUSED_IDS]
        if raw == 255:
            return 255
        return used_ids.index(raw + 1) if raw + 1 in used_ids else None

    def test_all_256_values(self):
        valid = [v for v in range(256) if self.expected(v) is not None]
        self.assertEqual(len(valid), 171 + 1)
        converted = coco_stuff171_mapping()(np.array([valid], dtype=np.uint8))
        self.assertEqual(converted.tolist()[0], [self.expected(v) for v in valid])
        self.assertEqual(sorted(set(converted.ravel().tolist()) - {255}), list(range(171)))
        for value in sorted(set(range(256)) - set(valid)):
            with self.assertRaisesRegex(ValueError, str(value)):
                coco_stuff171_mapping()(np.array([[0, value]], dtype=np.uint8))

    def test_mmseg_table_examples(self):
        raw = np.array([list(MMSEG_EXAMPLES)], dtype=np.uint8)
        self.assertEqual(coco_stuff171_mapping()(raw).tolist(), [list(MMSEG_EXAMPLES.values())])

    def test_command_line_writes_label_train_ids_next_to_the_maps(self):
        with tempfile.TemporaryDirectory() as root:
            annotations = os.path.join(root, "coco_stuff164k", "annotations", "val2017")
            os.makedirs(annotations)
            raw = np.array([[0, 91, 181, 255], [17, 123, 156, 89]], dtype=np.uint8)
            Image.fromarray(raw).save(os.path.join(annotations, "000000000139.png"))
            # COCO-Object's output in the same folder is not a source.
            Image.fromarray(np.zeros((2, 4), np.uint8)).save(
                os.path.join(annotations, "000000000139_instanceTrainIds.png")
            )
            main = tool_namespace("prepare_coco_stuff.py")["main"]
            main([root, "--workers", "1"])
            self.assertEqual(
                sorted(os.listdir(annotations)),
                ["000000000139.png", "000000000139_instanceTrainIds.png",
                 "000000000139_labelTrainIds.png"],
            )
            with Image.open(os.path.join(annotations, "000000000139_labelTrainIds.png")) as image:
                self.assertEqual(image.mode, "L")
                labels = np.array(image)
            self.assertEqual(labels.tolist(), [[0, 80, 170, 255], [16, 112, 145, 79]])
            summary = prepare_coco_stuff171(os.path.join(root, "coco_stuff164k"), "val2017")
            self.assertEqual((summary.written, summary.skipped), (0, 1))


if __name__ == "__main__":
    unittest.main()
