"""Predictor API (cdam_d2.engine.predictor): CDAM's open vocabulary and ClusterCAM's fixed classes behind the
same calls, equal to the evaluation path."""
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch

from tests.helpers import (CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, CreatesDirectory, one_template_file,
                           random_image, requires_detectron2, toy_cfg)


@requires_detectron2
class TestCDAMPredictor(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from cdam_d2.cdam.predictor import CDAMPredictor

        cls.folder = tempfile.TemporaryDirectory()
        cls.opts = ["MODEL.DEVICE", "cpu", "MODEL.CDAM.TEMPLATES", one_template_file(cls.folder.name)]
        cls.predictor = CDAMPredictor(CDAM_TOY_CONFIG, "background; cat; dog, puppy",
                                      opts=cls.opts + ["MODEL.CDAM.ALPHA", "0.0"])

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_batch_equals_single_images_in_every_format(self):
        from PIL import Image

        images = [random_image(0), random_image(1, (70, 64)), random_image(2, (33, 150))]
        batch = self.predictor.batch([image[:, :, ::-1] for image in images])  # BGR, the default
        path = os.path.join(self.folder.name, "image.png")
        Image.fromarray(images[0]).save(path)
        singles = [self.predictor(path), self.predictor(Image.fromarray(images[1])),
                   self.predictor(images[2][:, :, ::-1])]
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
            type(self.predictor)(CDAM_TOY_CONFIG, "cat", opts=self.opts, input_format="YUV", model=self.predictor.model)

    def test_equals_the_evaluation_path(self):
        from cdam_d2.cdam.resize import resize_image
        from cdam_d2.cdam.predictor import CDAMPredictor

        rgb_predictor = CDAMPredictor(CDAM_TOY_CONFIG, "background; cat; dog, puppy", input_format="RGB",
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

        predictor = CDAMPredictor(CDAM_TOY_CONFIG, opts=self.opts, model=self.predictor.model)
        self.assertEqual(predictor.names, list(VOC21_CLASSES))
        result = predictor(random_image(6, (48, 64)))
        self.assertEqual(result.probabilities.shape, (21, 48, 64))
        self.assertTrue(np.allclose(result.probabilities.sum(0), 1.0, atol=1e-5))

    def test_bad_vocabulary_fails_before_building_clip(self):
        from cdam_d2.cdam.predictor import CDAMPredictor

        with mock.patch("detectron2.modeling.build_model", side_effect=AssertionError("model built")):
            for vocabulary in ("", "a;;b"):
                with self.assertRaisesRegex(ValueError, "empty"):
                    CDAMPredictor(CDAM_TOY_CONFIG, vocabulary, opts=self.opts)
        with self.assertRaisesRegex(ValueError, "ClusterCAM"):
            CDAMPredictor(CLUSTERCAM_TOY_CONFIG, "cat", opts=["MODEL.DEVICE", "cpu"])


@requires_detectron2
class TestClusterCAMPredictor(unittest.TestCase):
    def test_fixed_classes_same_calls(self):
        from cdam_d2.data.datasets.builtin_meta import VOC21_CLASSES
        from cdam_d2.clustercam.predictor import ClusterCAMPredictor
        from cdam_d2.engine.predictor import build_predictor

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        predictor = build_predictor(CLUSTERCAM_TOY_CONFIG, opts=opts)
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
            build_predictor(CLUSTERCAM_TOY_CONFIG, "cat; dog", opts=opts)

    def test_pickled_weights_follow_the_config_opt_in(self):
        from detectron2.modeling import build_model

        from cdam_d2.engine.predictor import build_predictor
        from cdam_d2.weights import PickledWeightsError

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        torch.manual_seed(3)
        trained = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG, *opts))
        with tempfile.TemporaryDirectory() as folder:
            marker, path = os.path.join(folder, "code_ran"), os.path.join(folder, "weights.pth")
            torch.save({"model": trained.state_dict(), "extra": CreatesDirectory(marker)}, path)
            with self.assertRaisesRegex(PickledWeightsError, "CDAM_D2.ALLOW_PICKLED_WEIGHTS True"):
                build_predictor(CLUSTERCAM_TOY_CONFIG, opts=opts + ["MODEL.WEIGHTS", path])
            self.assertFalse(os.path.exists(marker))
            predictor = build_predictor(CLUSTERCAM_TOY_CONFIG, opts=opts + ["MODEL.WEIGHTS", path,
                                                                     "CDAM_D2.ALLOW_PICKLED_WEIGHTS", "True"])
            self.assertTrue(os.path.isdir(marker))  # the user opted in: full pickle
            for (name, expected), loaded in zip(trained.state_dict().items(), predictor.model.state_dict().values()):
                self.assertTrue(torch.equal(expected, loaded), name)


if __name__ == "__main__":
    unittest.main()
