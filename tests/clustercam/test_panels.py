"""The ClusterCAM panel by content: the tiles hold the model's tensors before any colouring, one row of four
maps per class; ClusterCAMNet.attention_maps against the network's own quantities."""
import unittest

import numpy as np
import torch

from tests.helpers import CLUSTERCAM_TOY_CONFIG, requires_detectron2, toy_cfg

NAMES = ["background", "aeroplane", "bicycle", "bird"]


def tiny_net(num_classes, cluster_depth, cam_last_layers, seed):
    from cdam_d2.clustercam.modeling import ClusterCAMNet

    torch.manual_seed(seed)
    return ClusterCAMNet(num_classes, embed_dim=32, depth=3, num_heads=2, cluster_depth=cluster_depth,
                         cam_last_layers=cam_last_layers, decoder_dim=8, drop_path=0.0).eval()


class AttentionMapsTest(unittest.TestCase):
    def test_parts_mix_into_the_cam_weight(self):
        net = tiny_net(3, cluster_depth=2, cam_last_layers=1, seed=0)
        images = torch.randn(2, 3, 80, 112)
        maps = net.attention_maps(images)
        for value in maps.values():
            self.assertEqual(tuple(value.shape), (2, 3, 5, 7))
        alpha = net.alphas()[-1]
        torch.testing.assert_close(maps["mixed"], (1 - alpha) * maps["patch_to_class"] + alpha * maps["cluster_to_class"])
        # mixed is the CAM's attention weight: CAM = (ReLU(head without bias) * mixed) propagated by R.
        features = net.forward_features(images, with_patch_affinity=True)
        activation = torch.relu(torch.nn.functional.conv2d(features["features"], net.head.weight, None, padding=1))
        expected = (activation.flatten(2) * maps["mixed"].flatten(2)) @ features["patch_affinity"].transpose(1, 2)
        torch.testing.assert_close(net.forward_cams(images), expected.reshape(activation.shape))
        # patch_to_class: the class tokens' share of the MHSA softmax on the patches, in (0, 1)
        self.assertTrue(((maps["patch_to_class"] > 0) & (maps["patch_to_class"] < 1)).all())

    def test_blocks_without_clusters_contribute_no_cluster_attention(self):
        net = tiny_net(2, cluster_depth=1, cam_last_layers=3, seed=1)
        images = torch.randn(1, 3, 64, 64)
        maps = net.attention_maps(images)
        parts = net.forward_features(images, with_attention_parts=True)["attention_parts"]
        self.assertIsNone(parts[0]["cluster_to_class"])
        torch.testing.assert_close(maps["cluster_to_class"].flatten(2), parts[2]["cluster_to_class"].mean(dim=1))


@requires_detectron2
class PanelTilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from detectron2.modeling import build_model

        torch.manual_seed(0)
        cls.model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.NUM_CLASSES", "3"))
        rng = np.random.default_rng(0)
        cls.image = rng.integers(0, 256, size=(70, 100, 3), dtype=np.uint8)
        cls.gt = rng.integers(0, 4, size=(70, 100)).astype(np.uint8)

    def test_tiles_hold_the_model_tensors(self):
        from cdam_d2.clustercam.visualize import panel_tiles

        model, image = self.model, self.image
        tiles = panel_tiles(model, image, [1, 3], NAMES, self.gt)
        self.assertTrue(model.training)  # the caller's mode is kept
        self.assertEqual(len(tiles), 4 + 4 * 2)
        self.assertEqual([t.title for t in tiles[:4]], ["input", "ground truth", "pseudo-label", "prediction"])
        self.assertEqual([t.title for t in tiles[4:8]], ["ClusterCAM: aeroplane", "patch-to-class attention: aeroplane",
                                                         "cluster-to-class attention: aeroplane",
                                                         "mixed attention (CAM weight): aeroplane"])
        self.assertEqual([t.new_row for t in tiles[4:]], [True, False, False, False] * 2)
        model.eval()
        normalized = model.normalize(torch.as_tensor(image.transpose(2, 0, 1).copy()))[None]
        labels = torch.tensor([[1.0, 0.0, 1.0]])
        cams = model.class_activation_maps(normalized, labels, train_mode=False)
        attention = model.net.attention_maps(normalized)
        pseudo = model.refine_pseudo_labels(normalized, labels, cams)[0]
        prediction = model([{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": 70,
                             "width": 100}])[0]["sem_seg"].argmax(0)
        model.train()
        np.testing.assert_array_equal(tiles[0].array, image)
        np.testing.assert_array_equal(tiles[1].array, self.gt)
        np.testing.assert_array_equal(tiles[2].array, pseudo.numpy())
        self.assertIn(255, tiles[2].array)  # the ignore band is shown, not hidden
        np.testing.assert_array_equal(tiles[3].array, prediction.numpy())
        for row, label in enumerate([1, 3]):
            cam, p2c, c2c, mixed = tiles[4 + 4 * row:8 + 4 * row]
            self.assertEqual(cam.array.shape, (70, 100))
            np.testing.assert_array_equal(cam.array, cams[0, label - 1].numpy())
            np.testing.assert_array_equal(p2c.array, attention["patch_to_class"][0, label - 1].numpy())
            np.testing.assert_array_equal(c2c.array, attention["cluster_to_class"][0, label - 1].numpy())
            np.testing.assert_array_equal(mixed.array, attention["mixed"][0, label - 1].numpy())
            self.assertEqual(p2c.array.shape, (70 // 16, 100 // 16))
            self.assertIs(p2c.background, image)
        without_gt = panel_tiles(model, image, [2], NAMES)
        self.assertEqual([t.title for t in without_gt[:3]], ["input", "pseudo-label", "prediction"])
        self.assertEqual(len(without_gt), 3 + 4)
        with self.assertRaisesRegex(ValueError, r"image_labels \[4\] must lie in \[1, 3\]"):
            panel_tiles(model, image, [4], NAMES)

    def test_drawn_panel_has_one_row_per_class(self):
        from cdam_d2.clustercam.visualize import draw_panel

        one = draw_panel(self.model, self.image, [1], NAMES, self.gt, tile_height=100)
        two = draw_panel(self.model, self.image, [1, 2], NAMES, self.gt, tile_height=100)
        self.assertEqual(one.dtype, np.uint8)
        self.assertEqual(one.shape[1], two.shape[1])
        self.assertGreater(two.shape[0] - one.shape[0], 100)  # one more row of maps


class ComposeTest(unittest.TestCase):
    def test_kinds_and_errors(self):
        from cdam_d2.engine.panels import Tile, compose, tile_kind

        picture = np.zeros((10, 20, 3), np.uint8)
        self.assertEqual(tile_kind(picture), "picture")
        self.assertEqual(tile_kind(np.zeros((3, 4), np.int64)), "labels")
        self.assertEqual(tile_kind(np.zeros((3, 4), np.float32)), "heat")
        with self.assertRaisesRegex(ValueError, "neither"):
            tile_kind(np.zeros((3, 4, 2), np.float32))
        panel = compose([Tile("a", picture), Tile("b", np.full((3, 4), np.nan, np.float32)),
                         Tile("c", np.array([[0, 255]], np.uint8), new_row=True),
                         Tile("d", np.ones((2, 2), np.float32), background=picture, marker=(1, 1))],
                        NAMES, columns=3, tile_height=60, title="heading")
        self.assertEqual(panel.ndim, 3)
        with self.assertRaisesRegex(ValueError, "at least one tile"):
            compose([], NAMES)


if __name__ == "__main__":
    unittest.main()
