"""tools/evaluate_predictions.py and cdam_d2.evaluation.prediction_folder against the WSSS releases'
evaluation formula, written out here independently (numpy loops over classes, as the release does), on
random folders of label PNGs and CAM dictionaries with ignore pixels."""
import json
import os
import runpy
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from types import SimpleNamespace

import numpy as np
from PIL import Image

from tests.helpers import REPO, requires_detectron2, slow

NUM_CLASSES = 6  # background + 5
IGNORE = 255
NAMES = ["background", "a", "b", "c", "d", "e"]


def release_counts(predictions, labels, num_classes=NUM_CLASSES):
    """The release's per-class counts: P, T, TP over pixels whose label is not 255."""
    tp, p, t = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for predict, gt in zip(predictions, labels):
        cal = gt < 255
        mask = (predict == gt) * cal
        for i in range(num_classes):
            p[i] += np.sum((predict == i) * cal)
            t[i] += np.sum((gt == i) * cal)
            tp[i] += np.sum((gt == i) * mask)
    return tp, p, t


def release_scores(predictions, labels):
    """mIoU, FP, FN (x100) and per-class IoU as the release's script defines them."""
    tp, p, t = release_counts(predictions, labels)
    iou, fp, fn = [], [], []
    for i in range(NUM_CLASSES):
        iou.append(tp[i] / (t[i] + p[i] - tp[i] + 1e-10))
        fp.append((p[i] - tp[i]) / (t[i] + p[i] - tp[i] + 1e-10))
        fn.append((t[i] - tp[i]) / (t[i] + p[i] - tp[i] + 1e-10))
    return 100 * np.mean(iou), 100 * np.mean(fp), 100 * np.mean(fn), [100 * v for v in iou]


def release_cam_prediction(cams, shape, threshold):
    """The release's label map of a CAM dictionary: arg-max over [threshold; maps], float32."""
    tensor = np.zeros((NUM_CLASSES, *shape), np.float32)
    for key in cams:
        tensor[key + 1] = cams[key]
    tensor[0, :, :] = threshold
    return np.argmax(tensor, axis=0).astype(np.uint8)


def random_label_map(rng, shape):
    """Blocky labels in [0, C) with about 10% ignore pixels."""
    coarse = rng.integers(0, NUM_CLASSES, size=(shape[0] // 6 + 1, shape[1] // 6 + 1))
    labels = np.kron(coarse, np.ones((6, 6), np.int64))[:shape[0], :shape[1]].astype(np.uint8)
    labels[rng.random(shape) < 0.1] = IGNORE
    return labels


def random_cams(rng, gt):
    """1-3 classes, maps that follow the labels loosely, some values exactly on thresholds, some negative."""
    present = sorted(rng.choice(NUM_CLASSES - 1, size=rng.integers(1, 4), replace=False).tolist())
    cams = {}
    for key in present:
        cam = 0.6 * (gt == key + 1) + 0.5 * rng.random(gt.shape)
        cam[rng.random(gt.shape) < 0.05] = np.float32(0.3)  # ties with the threshold 0.30
        cam[rng.random(gt.shape) < 0.02] = -0.1
        cams[key] = cam.astype(np.float32 if key % 2 else np.float64)
    return cams


def write_folders(root, num_images=9, seed=0):
    """Label maps, label-PNG predictions (with ignore pixels) and CAM dictionaries of random images."""
    rng = np.random.default_rng(seed)
    folders = {name: os.path.join(root, name) for name in ("labels", "png", "npy")}
    for folder in folders.values():
        os.makedirs(folder)
    data = []
    for index in range(num_images):
        image_id = f"img_{index:03d}"
        shape = (int(rng.integers(20, 40)), int(rng.integers(20, 40)))
        gt = random_label_map(rng, shape)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, NUM_CLASSES, shape)).astype(np.uint8)
        pred[rng.random(shape) < 0.05] = IGNORE  # the ignore band of pseudo-labels
        cams = random_cams(rng, gt)
        Image.fromarray(gt).save(os.path.join(folders["labels"], image_id + ".png"))
        Image.fromarray(pred).save(os.path.join(folders["png"], image_id + ".png"))
        np.save(os.path.join(folders["npy"], image_id + ".npy"), cams)
        data.append((image_id, gt, pred, cams))
    return folders, data


def write_all_ignore_labels(root, data):
    """Label maps of ``data``'s images that hold only the ignore value (``<id>.gt``, PNG) and their
    predictions (``<id>.png``) in ``root``; returns the (image id, label path) pairs."""
    pairs = []
    for image_id, gt, pred, _ in data:
        label_path = os.path.join(root, image_id + ".gt")
        Image.fromarray(np.full(gt.shape, IGNORE, np.uint8)).save(label_path, format="PNG")
        Image.fromarray(pred).save(os.path.join(root, image_id + ".png"))
        pairs.append((image_id, label_path))
    return pairs


def load_tool():
    return SimpleNamespace(**runpy.run_path(os.path.join(REPO, "tools", "evaluate_predictions.py")))


class ReleaseFormulaTest(unittest.TestCase):
    """score_folder + folder_metrics (no detectron2) against the independent formula."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.folders, cls.data = write_folders(cls._tmp.name)
        from cdam_d2.evaluation.prediction_folder import GroundTruth

        cls.items = [GroundTruth(image_id, os.path.join(cls.folders["labels"], image_id + ".png"))
                     for image_id, *_ in cls.data]

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def score(self, kind, thresholds=None, workers=1, folder=None, **kwargs):
        from cdam_d2.evaluation.prediction_folder import folder_metrics, score_folder

        score = score_folder(self.items, folder or self.folders[kind], kind, NUM_CLASSES, IGNORE, thresholds,
                             workers=workers, progress=False, **kwargs)
        return folder_metrics(score, NAMES, "release")

    def assert_matches(self, result, expected):
        miou, fp, fn, iou = expected
        self.assertAlmostEqual(result["mIoU"], miou, places=9)
        self.assertAlmostEqual(result["FP"], fp, places=9)
        self.assertAlmostEqual(result["FN"], fn, places=9)
        for name, value in zip(NAMES, iou):
            self.assertAlmostEqual(result["IoU"][name], value, places=9)

    def test_label_pngs_with_ignore_pixels(self):
        report = self.score("png")
        expected = release_scores([pred for _, _, pred, _ in self.data], [gt for _, gt, _, _ in self.data])
        self.assert_matches(report["results"][0], expected)
        self.assertGreater(expected[2], 0)  # the ignore predictions are misses: FN is not trivial

    def test_cam_dictionaries_at_several_thresholds(self):
        labels = [gt for _, gt, _, _ in self.data]
        for threshold in (0.0, 0.3, 0.45, 0.8):
            with self.subTest(threshold=threshold):
                report = self.score("npy", [threshold])
                predictions = [release_cam_prediction(cams, gt.shape, threshold) for _, gt, _, cams in self.data]
                self.assert_matches(report["results"][0], release_scores(predictions, labels))

    def test_curve_equals_one_evaluation_per_threshold_and_finds_the_best(self):
        from cdam_d2.evaluation.prediction_folder import curve_thresholds

        thresholds = curve_thresholds(0, 60)
        self.assertEqual(thresholds[0], 0.0)
        self.assertEqual(thresholds[-1], 0.59)
        labels = [gt for _, gt, _, _ in self.data]
        report = self.score("npy", thresholds)
        curve = []
        for threshold, result in zip(thresholds, report["results"]):
            predictions = [release_cam_prediction(cams, gt.shape, threshold) for _, gt, _, cams in self.data]
            expected = release_scores(predictions, labels)
            self.assertEqual(result["threshold"], threshold)
            self.assert_matches(result, expected)
            curve.append(expected[0])
        # The release's sweep: keep going while the mIoU improves, stop at the first that does not.
        best_miou, best_threshold = 0.0, 0.0
        for threshold, miou in zip(thresholds, curve):
            if miou > best_miou:
                best_miou, best_threshold = miou, threshold
            else:
                break
        self.assertEqual(report["first_peak"]["threshold"], best_threshold)
        self.assertAlmostEqual(report["first_peak"]["mIoU"], best_miou, places=9)
        self.assertEqual(report["best"]["threshold"], thresholds[int(np.argmax(curve))])
        self.assertGreater(report["best"]["threshold"], 0.0)  # an interior optimum: the sweep did something

    @slow
    def test_worker_processes_give_the_same_counts(self):
        from cdam_d2.evaluation.prediction_folder import score_folder

        for kind, thresholds in (("npy", [0.1, 0.3, 0.5]), ("png", None)):
            single, pooled = (score_folder(self.items, self.folders[kind], kind, NUM_CLASSES, IGNORE, thresholds,
                                           workers=workers, progress=False) for workers in (1, 3))
            self.assertTrue(np.array_equal(single.confusions, pooled.confusions), kind)

    def test_absent_classes_score_zero_even_below_zero_thresholds(self):
        # A negative threshold makes the absent classes (score 0) compete with the negative map values.
        labels = [gt for _, gt, _, _ in self.data]
        report = self.score("npy", [-0.05])
        predictions = [release_cam_prediction(cams, gt.shape, -0.05) for _, gt, _, cams in self.data]
        self.assert_matches(report["results"][0], release_scores(predictions, labels))

    def test_missing_extra_and_wrongly_sized_files_are_named(self):
        with tempfile.TemporaryDirectory() as folder:
            for image_id, gt, pred, _ in self.data[1:]:
                Image.fromarray(pred).save(os.path.join(folder, image_id + ".png"))
            missing = self.data[0][0]
            with self.assertRaisesRegex(FileNotFoundError, f"{missing}.png.*--allow-missing"):
                self.score("png", folder=folder)
            report = self.score("png", folder=folder, allow_missing=True)
            self.assertEqual(report["missing"], [missing])
            gt0 = self.data[0][1]
            predictions = [np.full(gt0.shape, IGNORE, np.uint8)] + [pred for _, _, pred, _ in self.data[1:]]
            expected = release_scores(predictions, [gt for _, gt, _, _ in self.data])
            self.assert_matches(report["results"][0], expected)  # all-ignore: every labelled pixel a miss

            Image.fromarray(np.zeros((5, 5), np.uint8)).save(os.path.join(folder, "stranger.png"))
            with self.assertRaisesRegex(ValueError, "stranger.png"):
                self.score("png", folder=folder, allow_missing=True)
            os.remove(os.path.join(folder, "stranger.png"))

            image_id, gt = self.data[3][:2]
            Image.fromarray(np.zeros((gt.shape[0] + 1, gt.shape[1]), np.uint8)).save(
                os.path.join(folder, image_id + ".png"))
            with self.assertRaisesRegex(ValueError, f"{image_id}.png' has size"):
                self.score("png", folder=folder, allow_missing=True)
            Image.fromarray(np.full(gt.shape, 9, np.uint8)).save(os.path.join(folder, image_id + ".png"))
            with self.assertRaisesRegex(ValueError, rf"{image_id}.png' has values \[9\]"):
                self.score("png", folder=folder, allow_missing=True)

    def test_all_ignore_prediction_files_count_every_labelled_pixel_as_a_miss(self):
        with tempfile.TemporaryDirectory() as folder:
            predictions = []
            for image_id, gt, _, _ in self.data:
                predictions.append(np.full(gt.shape, IGNORE, np.uint8))
                Image.fromarray(predictions[-1]).save(os.path.join(folder, image_id + ".png"))
            result = self.score("png", folder=folder)["results"][0]
        self.assert_matches(result, release_scores(predictions, [gt for _, gt, _, _ in self.data]))
        self.assertEqual(result["mIoU"], 0.0)
        self.assertGreater(result["FN"], 99.0)  # every labelled class missed entirely

    def test_label_maps_without_a_labelled_pixel_are_an_error_about_the_ground_truth(self):
        from cdam_d2.evaluation.prediction_folder import GroundTruth, score_folder

        with tempfile.TemporaryDirectory() as root:
            items = [GroundTruth(*pair) for pair in write_all_ignore_labels(root, self.data[:2])]
            with self.assertRaisesRegex(ValueError, r"label maps of the 2 images have no labelled pixel: every pixel "
                                                    r"is the ignore label 255 \(e\.g\. '.*img_000\.gt'\)"):
                score_folder(items, root, "png", NUM_CLASSES, IGNORE, workers=1, progress=False)

    def test_cam_dictionaries_of_300_classes_and_a_missing_file_against_a_pixel_count(self):
        # Classes and labels past 255 (16-bit label maps), and the no-class row 300, must not wrap around in bytes.
        from cdam_d2.evaluation.prediction_folder import GroundTruth, score_folder

        num_classes, ignore_label, thresholds = 300, 1000, [0.25, 0.5]
        rng = np.random.default_rng(5)
        with tempfile.TemporaryDirectory() as root:
            items, expected = [], np.zeros((len(thresholds), num_classes + 1, num_classes + 1), np.int64)
            for index in range(3):
                image_id, shape = f"wide_{index}", (11 + index, 13)
                gt = rng.integers(250, num_classes, size=shape).astype(np.uint16)
                gt[rng.random(shape) < 0.1] = ignore_label
                label_path = os.path.join(root, image_id + ".gt")
                Image.fromarray(gt).save(label_path, format="PNG")
                items.append(GroundTruth(image_id, label_path))
                columns = np.where(gt == ignore_label, num_classes, gt)
                if index == 1:  # no prediction file: every pixel predicted as no class
                    for step in range(len(thresholds)):
                        np.add.at(expected[step], (np.full(shape, num_classes), columns), 1)
                    continue
                keys = sorted(rng.choice(np.arange(250, num_classes - 1), size=3, replace=False).tolist())
                cams = {key: rng.random(shape).astype(np.float32) for key in keys}
                np.save(os.path.join(root, image_id + ".npy"), cams)
                for step, threshold in enumerate(thresholds):
                    scores = np.zeros((num_classes, *shape), np.float32)
                    scores[0] = threshold
                    for key, cam in cams.items():
                        scores[key + 1] = cam
                    np.add.at(expected[step], (scores.argmax(axis=0), columns), 1)
            score = score_folder(items, root, "npy", num_classes, ignore_label, thresholds, workers=1,
                                 allow_missing=True, progress=False)
        self.assertEqual(score.missing, ["wide_1"])
        self.assertGreater(int(expected[:, 256:num_classes].sum()), 0)  # the counts past 255 are exercised
        self.assertTrue(np.array_equal(score.confusions, expected))

    def test_bad_cam_files_are_named(self):
        with tempfile.TemporaryDirectory() as folder:
            for image_id, gt, _, cams in self.data:
                np.save(os.path.join(folder, image_id + ".npy"), cams)
            image_id, gt = self.data[2][:2]
            np.save(os.path.join(folder, image_id + ".npy"), {0: np.zeros((gt.shape[0], gt.shape[1] + 2))})
            with self.assertRaisesRegex(ValueError, f"{image_id}.npy': the map of class 0 has size"):
                self.score("npy", [0.3], folder=folder)
            np.save(os.path.join(folder, image_id + ".npy"), {7: np.zeros(gt.shape)})
            with self.assertRaisesRegex(ValueError, f"{image_id}.npy' has the class index 7"):
                self.score("npy", [0.3], folder=folder)
            np.save(os.path.join(folder, image_id + ".npy"), np.zeros(gt.shape))
            with self.assertRaisesRegex(ValueError, f"{image_id}.npy' cannot be read"):
                self.score("npy", [0.3], folder=folder)


@requires_detectron2
class EvaluatePredictionsToolTest(unittest.TestCase):
    """The command line on a registered dataset: JSON and table, conventions, argument errors."""

    DATASET = "cdam_test_evaluate_predictions"

    @classmethod
    def setUpClass(cls):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        cls._tmp = tempfile.TemporaryDirectory()
        cls.folders, cls.data = write_folders(cls._tmp.name, num_images=5, seed=3)
        labels = cls.folders["labels"]
        records = [{"file_name": os.path.join(labels, f"{image_id}.jpg"), "image_id": image_id,
                    "sem_seg_file_name": os.path.join(labels, f"{image_id}.png")} for image_id, *_ in cls.data]
        DatasetCatalog.register(cls.DATASET, lambda: records)
        MetadataCatalog.get(cls.DATASET).set(stuff_classes=NAMES, ignore_label=IGNORE)
        cls.tool = load_tool()

    @classmethod
    def tearDownClass(cls):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        DatasetCatalog.remove(cls.DATASET)
        MetadataCatalog.remove(cls.DATASET)
        cls._tmp.cleanup()

    def run_tool(self, *args):
        out, err = StringIO(), StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = self.tool.main(["--dataset", self.DATASET, "--workers", "1", *args])
        return code, out.getvalue(), err.getvalue()

    def test_curve_json_and_table(self):
        output = os.path.join(self._tmp.name, "curve.json")
        code, out, _ = self.run_tool("--predictions", self.folders["npy"], "--type", "npy", "--curve", "10", "50",
                                     "--output", output)
        self.assertEqual(code, 0)
        with open(output) as f:
            report = json.load(f)
        self.assertEqual([r["threshold"] for r in report["results"]], [i / 100 for i in range(10, 50)])
        self.assertEqual(report["convention"], "release")
        self.assertEqual(report["num_images"], 5)
        labels = [gt for _, gt, _, _ in self.data]
        best = report["best"]["threshold"]
        predictions = [release_cam_prediction(cams, gt.shape, best) for _, gt, _, cams in self.data]
        self.assertAlmostEqual(report["best"]["mIoU"], release_scores(predictions, labels)[0], places=9)
        self.assertIn("Metric convention: release", out)
        self.assertIn(f"Best background threshold {best:.2f}", out)
        self.assertIn(f"Per-class IoU at background threshold {best:.2f} [release convention]", out)

    def test_report_json_keeps_its_key_order_and_writes_nan_as_null(self):
        from cdam_d2.evaluation.prediction_folder import write_report

        report = {"convention": "detectron2", "missing": [],
                  "results": [{"threshold": None, "mIoU": 50.0, "IoU": {"b": float("nan"), "a": 50.0}}]}
        path = os.path.join(self._tmp.name, "new folder", "report.json")
        write_report(report, path)
        with open(path) as f:
            text = f.read()
        self.assertEqual(json.loads(text), {"convention": "detectron2", "missing": [],
                                            "results": [{"threshold": None, "mIoU": 50.0,
                                                         "IoU": {"b": None, "a": 50.0}}]})
        self.assertLess(text.index('"convention"'), text.index('"missing"'))
        self.assertLess(text.index('"b"'), text.index('"a"'))
        self.assertNotIn("NaN", text)

    def test_detectron2_convention_leaves_out_classes_absent_from_the_labels(self):
        from cdam_d2.evaluation.metrics import confusion_matrix, segmentation_metrics

        output = os.path.join(self._tmp.name, "d2.json")
        code, out, _ = self.run_tool("--predictions", self.folders["png"], "--convention", "detectron2",
                                     "--output", output)
        self.assertEqual(code, 0)
        self.assertIn("Metric convention: detectron2", out)
        with open(output) as f:
            result = json.load(f)["results"][0]
        conf = sum(confusion_matrix(np.where(pred == IGNORE, NUM_CLASSES, pred).astype(np.uint8), gt,
                                    NUM_CLASSES, IGNORE)[0] for _, gt, pred, _ in self.data)
        self.assertAlmostEqual(result["mIoU"], segmentation_metrics(conf, NAMES, "detectron2")["mIoU"], places=9)

    def test_argument_errors(self):
        for args, message in (
            (["--predictions", self.folders["npy"], "--type", "npy"], "--threshold T"),
            (["--predictions", self.folders["png"], "--threshold", "0.3"], "apply to CAM dictionaries"),
            (["--predictions", self.folders["npy"], "--type", "npy", "--curve", "5", "5"], "END > START"),
        ):
            with self.subTest(args=args), self.assertRaises(SystemExit), redirect_stderr(StringIO()) as err:
                self.tool.main(["--dataset", self.DATASET, *args])
            self.assertIn(message, err.getvalue())
        code, _, err = self.run_tool("--predictions", os.path.join(self._tmp.name, "nowhere"))
        self.assertEqual(code, 2)
        self.assertIn("nowhere' does not exist", err)
        code, _, err = self.tool.main(["--dataset", "no_such_dataset", "--predictions", "x"]), None, None
        self.assertEqual(code, 2)

    def test_scoring_errors_are_named_and_only_input_errors_are_caught(self):
        from unittest import mock

        image_id, gt = self.data[2][:2]
        with tempfile.TemporaryDirectory() as folder:
            for other_id, _, pred, _ in self.data:
                Image.fromarray(pred).save(os.path.join(folder, other_id + ".png"))
            Image.fromarray(np.full(gt.shape, 9, np.uint8)).save(os.path.join(folder, image_id + ".png"))
            code, out, err = self.run_tool("--predictions", folder)
        self.assertEqual(code, 2)
        self.assertRegex(err, rf"(?m)^error: Prediction '.*{image_id}\.png' has values \[9\]")
        self.assertEqual(out, "")
        # A fault of the scorer itself is not an input error: it surfaces with its traceback.
        with mock.patch("cdam_d2.evaluation.prediction_folder.score_folder", side_effect=KeyError("internal")):
            with self.assertRaises(KeyError):
                self.run_tool("--predictions", self.folders["png"])

    def test_ground_truth_without_a_labelled_pixel_is_a_named_input_error(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        name = self.DATASET + "_all_ignore"
        with tempfile.TemporaryDirectory() as root:
            records = [{"file_name": image_id + ".jpg", "image_id": image_id, "sem_seg_file_name": label_path}
                       for image_id, label_path in write_all_ignore_labels(root, self.data[:2])]
            DatasetCatalog.register(name, lambda: records)
            MetadataCatalog.get(name).set(stuff_classes=NAMES, ignore_label=IGNORE)
            self.addCleanup(DatasetCatalog.remove, name)
            self.addCleanup(MetadataCatalog.remove, name)
            out, err = StringIO(), StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = self.tool.main(["--dataset", name, "--workers", "1", "--predictions", root])
        self.assertEqual(code, 2)
        self.assertIn("error: The label maps of the 2 images have no labelled pixel", err.getvalue())


if __name__ == "__main__":
    unittest.main()
