"""docs/WSSS.md's toy loop, run from its own lines: train ClusterCAM, export CAM dictionaries and pseudo-labels
of train_aug, score the seeds with a threshold curve and the masks as PNGs, train and evaluate the second stage,
draw panels."""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import REPO, documented_commands, requires_detectron2, slow, subprocess_env


@slow
@requires_detectron2
class WSSSLoopTest(unittest.TestCase):
    def test_the_pages_loop_runs_and_leaves_its_outputs(self):
        from cdam_d2.data.toy import make_toy_datasets

        commands = documented_commands(os.path.join("docs", "WSSS.md"), "The whole loop on toy data")
        self.assertTrue(commands[0].startswith("export DETECTRON2_DATASETS="), commands[0])
        self.assertEqual(commands[1], "python tools/make_toy_datasets.py $DETECTRON2_DATASETS")
        steps = [(shlex.split(c)[1], c) for c in commands[2:]]
        self.assertEqual([s for s, _ in steps], [
            "tools/train_net.py", "tools/export_pseudo_labels.py", "tools/export_pseudo_labels.py",
            "tools/evaluate_predictions.py", "tools/evaluate_predictions.py", "tools/train_second_stage.py",
            "tools/train_second_stage.py", "tools/visualize.py"])
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run")
            env = subprocess_env(DETECTRON2_DATASETS=os.path.join(tmp, "datasets"), OUT=out, OMP_NUM_THREADS="1")
            make_toy_datasets(env["DETECTRON2_DATASETS"])  # what commands[1] runs, without a process start
            printed = []
            for _, command in steps:
                command = command.replace("python ", f"{shlex.quote(sys.executable)} ", 1)
                done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=900)
                self.assertEqual(done.returncode, 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
                printed.append(done.stdout)
            self.check_outputs(out, printed)

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
