"""docs/WSSS.md's toy loop, run from its own lines: train ClusterCAM, export CAM dictionaries and pseudo-labels
of train_aug, score the seeds with a threshold curve and the masks as PNGs, train and evaluate the second stage,
draw panels."""
import json
import os
import tempfile
import unittest

from tests.helpers import documented_commands, requires_detectron2, run_documented_toy_sequence, slow


@slow
@requires_detectron2
class WSSSLoopTest(unittest.TestCase):
    def test_the_pages_loop_runs_and_leaves_its_outputs(self):
        commands = documented_commands(os.path.join("docs", "WSSS.md"), "The whole loop on toy data")
        tools = ["tools/train_net.py", "tools/export_pseudo_labels.py", "tools/export_pseudo_labels.py",
                 "tools/evaluate_predictions.py", "tools/evaluate_predictions.py", "tools/train_second_stage.py",
                 "tools/train_second_stage.py", "tools/visualize.py"]
        with tempfile.TemporaryDirectory() as tmp:
            out, finished = run_documented_toy_sequence(self, commands, tmp, tools)
            self.check_outputs(out, [done.stdout for done in finished])

    def check_outputs(self, out, printed):
        with open(os.path.join(out, "clustercam", "metrics.json")) as f:
            evaluations = [json.loads(line) for line in f if '"sem_seg/mIoU"' in line]
        self.assertTrue(evaluations)
        for record in evaluations:
            self.assertIn("pseudo_label/mIoU", record)
            self.assertIn("cam_seed/mIoU", record)
        cams = sorted(os.listdir(os.path.join(out, "cams")))
        pseudo = sorted(os.listdir(os.path.join(out, "pseudo")))
        self.assertEqual(len(cams), 16)
        self.assertEqual([name[:-4] for name in cams], [name[:-4] for name in pseudo])
        with open(os.path.join(out, "seeds.json")) as f:
            seeds = json.load(f)
        self.assertEqual([r["threshold"] for r in seeds["results"]], [i / 100 for i in range(60)])
        self.assertIn(seeds["best"]["threshold"], [r["threshold"] for r in seeds["results"]])
        self.assertIn(f"Best background threshold {seeds['best']['threshold']:.2f}", printed[3])
        with open(os.path.join(out, "masks.json")) as f:
            masks = json.load(f)
        self.assertEqual(masks["type"], "png")
        self.assertIn("Per-class IoU [release convention]", printed[4])
        self.assertTrue(os.path.isfile(os.path.join(out, "deeplab", "model_final.pth")))
        self.assertIn("copypaste: mIoU", printed[6] + open(os.path.join(out, "deeplab_eval", "log.txt")).read())
        self.assertEqual(len(os.listdir(os.path.join(out, "panels"))), 2)


if __name__ == "__main__":
    unittest.main()
