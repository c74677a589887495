"""Predictor API (cdam_d2.engine.predictor) and the banded full-size post-processing behind it."""
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CDAM_TOY = os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml")
CLUSTERCAM_TOY = os.path.join(REPO, "configs", "quick_schedules", "clustercam_voc_toy.yaml")


def one_template_file(folder):
    path = os.path.join(folder, "templates.txt")
    with open(path, "w") as f:
        f.write("a photo of a {}.\n")
    return path


def random_image(seed, size=(90, 120)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


class TestFullSizePredictions(unittest.TestCase):
    def test_equals_whole_map_upsampling(self):
        from cdam_d2.cdam.modeling.full_size import full_size_predictions, upsample_rows
        from cdam_d2.cdam.modeling.postprocess import class_probabilities, encode_background

        generator = torch.Generator().manual_seed(0)
        query_to_class = (0, 1, 1, 2, 3, 3, 3)
        for low, high in [((56, 75), (375, 500)), ((67, 93), (50, 71)), ((5, 7), (11, 3)), ((40, 40), (40, 40))]:
            logits = 0.1 * torch.randn(len(query_to_class), *low, generator=generator)
            whole = F.interpolate(logits[None], size=high, mode="bilinear", align_corners=False)[0]
            self.assertLess((upsample_rows(logits, 0, high[0], high) - whole).abs().max().item(), 2e-6)
            probs = class_probabilities(whole, query_to_class, 4, 50.0)
            threshold = float(probs.amax(0).median())  # half of the pixels are thresholded to class 0
            expected = encode_background(probs, threshold).argmax(0)
            labels, probabilities = full_size_predictions(logits, high, query_to_class, 4, 50.0, threshold)
            self.assertEqual((labels.dtype, probabilities.dtype), (torch.int32, torch.float32))
            self.assertLess((probabilities - probs).abs().max().item(), 1e-5)
            # Labels agree except where rounding of the resize can flip a near-tie or the threshold test.
            top2 = probs.topk(min(2, probs.shape[0]), dim=0).values
            near_tie = ((top2[0] - top2[-1]) < 1e-5) | ((probs.amax(0) - threshold).abs() < 1e-5)
            self.assertTrue(torch.equal(labels.long()[~near_tie], expected[~near_tie]))
            self.assertLessEqual(int(near_tie.sum()), max(2, near_tie.numel() // 100))  # nearly every pixel compared

    def test_band_size_changes_only_rounding(self):
        from cdam_d2.cdam.modeling.full_size import full_size_predictions

        logits = 0.1 * torch.randn(5, 30, 41, generator=torch.Generator().manual_seed(1))
        labels, probabilities = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4)
        top2 = probabilities.topk(2, dim=0).values
        decided = ((top2[0] - top2[1]) > 1e-5) & ((probabilities.amax(0) - 0.4).abs() > 1e-5)
        for band_elements in (1, 5 * 131 * 7, 10 ** 9):  # one row, seven rows, one band
            banded = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4,
                                           band_elements=band_elements)
            self.assertTrue(torch.equal(banded[0][decided], labels[decided]))
            self.assertLess((banded[1] - probabilities).abs().max().item(), 1e-6)
        without = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4, False)
        self.assertIsNone(without[1])
        self.assertTrue(torch.equal(without[0], labels))


class TestImageInputs(unittest.TestCase):
    def test_sixteen_bit_grey_png_is_scaled_not_clipped(self):
        from PIL import Image

        from cdam_d2.data.image_io import read_image_rgb

        values = np.array([[0, 257, 128 * 257], [200 * 257, 65535, 1000]], dtype=np.uint16)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "grey16.png")
            Image.fromarray(values).save(path)
            self.assertIn(Image.open(path).mode, ("I;16", "I"))
            rgb = read_image_rgb(path)
        self.assertEqual((rgb.shape, rgb.dtype), ((2, 3, 3), np.uint8))
        expected = np.rint(values / 257.0).astype(np.uint8)
        for channel in range(3):
            np.testing.assert_array_equal(rgb[:, :, channel], expected)

    def test_formats_and_errors(self):
        from PIL import Image

        from cdam_d2.data.image_io import image_to_rgb, read_image_rgb

        rgb = random_image(0, (5, 7))
        np.testing.assert_array_equal(image_to_rgb(rgb[:, :, ::-1], "BGR"), rgb)
        np.testing.assert_array_equal(image_to_rgb(rgb, "RGB"), rgb)
        np.testing.assert_array_equal(image_to_rgb(Image.fromarray(rgb)), rgb)
        np.testing.assert_array_equal(image_to_rgb(np.dstack([rgb, np.full((5, 7), 255, np.uint8)]), "RGB"), rgb)
        np.testing.assert_array_equal(image_to_rgb(rgb[:, :, 0]), np.repeat(rgb[:, :, :1], 3, axis=2))
        np.testing.assert_array_equal(image_to_rgb(rgb.astype(np.uint16) * 257, "RGB"), rgb)
        with self.assertRaisesRegex(TypeError, "float32"):
            image_to_rgb(rgb.astype(np.float32))
        with self.assertRaisesRegex(ValueError, "shape"):
            image_to_rgb(np.zeros((4, 4, 2), np.uint8))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "broken.jpg")
            with open(path, "wb") as f:
                f.write(b"not an image")
            with self.assertRaisesRegex(OSError, "broken.jpg"):
                read_image_rgb(path)
            path = os.path.join(folder, "exif.jpg")
            tall = random_image(1, (20, 10))
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
            Image.fromarray(tall).save(path, exif=exif, quality=95)
            self.assertEqual(read_image_rgb(path).shape, (10, 20, 3))


@requires_detectron2
class TestCDAMPredictor(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from cdam_d2.cdam.predictor import CDAMPredictor

        cls.folder = tempfile.TemporaryDirectory()
        cls.opts = ["MODEL.DEVICE", "cpu", "MODEL.CDAM.TEMPLATES", one_template_file(cls.folder.name)]
        cls.predictor = CDAMPredictor(CDAM_TOY, "background; cat; dog, puppy", opts=cls.opts + ["MODEL.CDAM.ALPHA", "0.0"])

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_batch_equals_single_images_in_every_format(self):
        from PIL import Image

        images = [random_image(0), random_image(1, (70, 64)), random_image(2, (33, 150))]
        batch = self.predictor.batch([image[:, :, ::-1] for image in images])  # BGR, the default
        path = os.path.join(self.folder.name, "image.png")
        Image.fromarray(images[0]).save(path)
        singles = [self.predictor(path), self.predictor(Image.fromarray(images[1])), self.predictor(images[2][:, :, ::-1])]
        for image, together, alone in zip(images, batch, singles):
            self.assertEqual(together.labels.shape, image.shape[:2])
            self.assertEqual(together.probabilities.shape, (3, *image.shape[:2]))
            self.assertEqual(together.names, ["background", "cat", "dog"])
            np.testing.assert_array_equal(together.labels, alone.labels)
            np.testing.assert_array_equal(together.probabilities, alone.probabilities)
            np.testing.assert_array_equal(together.labels, together.probabilities.argmax(0))  # threshold off
            self.assertAlmostEqual(float(together.area_fractions().sum()), 1.0)
        self.assertIsNone(self.predictor(images[0], probabilities=False).probabilities)
        with self.assertRaisesRegex(ValueError, "input_format"):
            type(self.predictor)(CDAM_TOY, "cat", opts=self.opts, input_format="YUV", model=self.predictor.model)

    def test_equals_the_evaluation_path(self):
        from cdam_d2.cdam.resize import resize_image
        from cdam_d2.cdam.predictor import CDAMPredictor

        rgb_predictor = CDAMPredictor(CDAM_TOY, "background; cat; dog, puppy", input_format="RGB",
                                      opts=self.opts + ["MODEL.CDAM.ALPHA", "0.0"], model=self.predictor.model)
        image = random_image(3, (75, 101))
        result = rgb_predictor(image)
        resized = resize_image(image, 96, 256)
        scores = self.predictor.model.segment(torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                                              75, 101, rgb_predictor._queries)
        np.testing.assert_allclose(result.probabilities, scores.numpy(), atol=1e-5)
        top2 = scores.topk(2, dim=0).values
        decided = (top2[0] - top2[1]).numpy() > 1e-5
        np.testing.assert_array_equal(result.labels[decided], scores.argmax(0).numpy()[decided])

    def test_pamr_is_applied_like_the_evaluation_path(self):
        from cdam_d2.cdam.resize import resize_image

        model = self.predictor.model
        image = random_image(4, (75, 101))
        resized = torch.as_tensor(np.ascontiguousarray(resize_image(image, 96, 256).transpose(2, 0, 1)))
        queries = self.predictor._queries
        plain = model.segment(resized, 75, 101, queries)
        model.segmentor.pamr_steps = 3
        try:
            refined = model.segment(resized, 75, 101, queries)
            labels, probabilities = model.segment_full_size(resized, 75, 101, queries)
        finally:
            model.segmentor.pamr_steps = 0
        self.assertGreater((refined - plain).abs().max().item(), 1e-4)  # PAMR changed the scores
        np.testing.assert_allclose(probabilities.numpy(), refined.numpy(), atol=1e-6)  # threshold off
        np.testing.assert_array_equal(labels.numpy(), refined.argmax(0).numpy())

    def test_vocabulary_change_encodes_only_new_names(self):
        model = self.predictor.model
        calls = []
        original = model.text_embedder.__call__

        def spy(names, *args, **kwargs):
            calls.append(list(names))
            return original(names, *args, **kwargs)

        with mock.patch.object(model, "text_embedder", side_effect=spy):
            self.predictor.set_vocabulary("background; cat; lighthouse, beacon; dog")
            self.assertEqual(calls, [["lighthouse", "beacon"]])  # ATP words and known names are not re-encoded
            self.predictor.set_vocabulary(["cat", "background"])
            self.assertEqual(len(calls), 1)
            result = self.predictor(random_image(4, (40, 50)))
            self.assertEqual(result.names, ["cat", "background"])
            self.assertEqual(result.probabilities.shape, (2, 40, 50))
            self.predictor.set_vocabulary(dataset="cdam_context60_sem_seg_val")
            self.assertEqual(len(calls), 2)
            self.assertEqual(self.predictor(random_image(5, (40, 50))).probabilities.shape[0], 60)
        self.predictor.set_vocabulary("background; cat; dog, puppy")
        for vocabulary in ("", "cat;;dog", " ; "):
            with self.assertRaisesRegex(ValueError, "empty"):
                self.predictor.set_vocabulary(vocabulary)

    def test_dataset_vocabulary_by_default(self):
        from cdam_d2.data.datasets.builtin_meta import VOC21_CLASSES
        from cdam_d2.cdam.predictor import CDAMPredictor

        predictor = CDAMPredictor(CDAM_TOY, opts=self.opts, model=self.predictor.model)
        self.assertEqual(predictor.names, list(VOC21_CLASSES))
        result = predictor(random_image(6, (48, 64)))
        self.assertEqual(result.probabilities.shape, (21, 48, 64))
        self.assertTrue(np.allclose(result.probabilities.sum(0), 1.0, atol=1e-5))

    def test_bad_vocabulary_fails_before_building_clip(self):
        from cdam_d2.cdam.predictor import CDAMPredictor

        with mock.patch("detectron2.modeling.build_model", side_effect=AssertionError("model built")):
            for vocabulary in ("", "a;;b"):
                with self.assertRaisesRegex(ValueError, "empty"):
                    CDAMPredictor(CDAM_TOY, vocabulary, opts=self.opts)
        with self.assertRaisesRegex(ValueError, "ClusterCAM"):
            CDAMPredictor(CLUSTERCAM_TOY, "cat", opts=["MODEL.DEVICE", "cpu"])


@requires_detectron2
class TestClusterCAMPredictor(unittest.TestCase):
    def test_fixed_classes_same_calls(self):
        from cdam_d2.data.datasets.builtin_meta import VOC21_CLASSES
        from cdam_d2.clustercam.predictor import ClusterCAMPredictor
        from cdam_d2.engine.predictor import build_predictor

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        predictor = build_predictor(CLUSTERCAM_TOY, opts=opts)
        self.assertIsInstance(predictor, ClusterCAMPredictor)
        self.assertEqual(predictor.names, list(VOC21_CLASSES))
        images = [random_image(0, (40, 56)), random_image(1, (64, 48))]
        batch = predictor.batch(images)
        for image, together in zip(images, batch):
            alone = predictor(image)
            self.assertEqual(together.probabilities.shape, (21, *image.shape[:2]))
            np.testing.assert_array_equal(together.labels, alone.labels)
            np.testing.assert_allclose(together.probabilities, alone.probabilities, atol=1e-6)
            np.testing.assert_array_equal(together.labels, together.probabilities.argmax(0))
        with self.assertRaisesRegex(ValueError, "fixed classes"):
            predictor.set_vocabulary("cat; dog")
        with self.assertRaisesRegex(ValueError, "fixed classes"):
            build_predictor(CLUSTERCAM_TOY, "cat; dog", opts=opts)

    def test_pickled_weights_follow_the_config_opt_in(self):
        from detectron2.modeling import build_model

        from cdam_d2.engine import load_cfg
        from cdam_d2.engine.predictor import build_predictor
        from cdam_d2.weights import PickledWeightsError
        from tests.test_checkpoint import CreatesDirectory

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        torch.manual_seed(3)
        trained = build_model(load_cfg(CLUSTERCAM_TOY, opts)[0])
        with tempfile.TemporaryDirectory() as folder:
            marker, path = os.path.join(folder, "code_ran"), os.path.join(folder, "weights.pth")
            torch.save({"model": trained.state_dict(), "extra": CreatesDirectory(marker)}, path)
            with self.assertRaisesRegex(PickledWeightsError, "CDAM_D2.ALLOW_PICKLED_WEIGHTS True"):
                build_predictor(CLUSTERCAM_TOY, opts=opts + ["MODEL.WEIGHTS", path])
            self.assertFalse(os.path.exists(marker))
            predictor = build_predictor(CLUSTERCAM_TOY, opts=opts + ["MODEL.WEIGHTS", path,
                                                                     "CDAM_D2.ALLOW_PICKLED_WEIGHTS", "True"])
            self.assertTrue(os.path.isdir(marker))  # the user opted in: full pickle
            for (name, expected), loaded in zip(trained.state_dict().items(), predictor.model.state_dict().values()):
                self.assertTrue(torch.equal(expected, loaded), name)


if __name__ == "__main__":
    unittest.main()
