"""The web demo's click on the input image: its handler gives the clicked patch's CDAM attention next to the
base's (for every base of ``MODEL.CDAM.BASE``, SC-CLIP and ResCLIP included), and the page wires it to the
image's select event and offers every base."""
import importlib.util
import os
import runpy
import tempfile
import unittest
from types import SimpleNamespace

import numpy as np

from tests.helpers import CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, REPO, requires_detectron2


def load_web_demo():
    return SimpleNamespace(**runpy.run_path(os.path.join(REPO, "tools", "web_demo.py")))


@requires_detectron2
@unittest.skipIf(importlib.util.find_spec("gradio") is None, "the web demo needs gradio (pip install -e .[demo])")
class PatchAttentionClickTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.web_demo = load_web_demo()
        cls._tmp = tempfile.TemporaryDirectory()
        templates = os.path.join(cls._tmp.name, "templates.txt")
        with open(templates, "w") as f:
            f.write("a photo of a {}.\n")
        # layer keys of SC-CLIP and ResCLIP that fit the tiny 3-block tower (unused by the other bases)
        cls.segmenter = cls.web_demo.Segmenter([CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG], [
            "MODEL.DEVICE", "cpu", "MODEL.CDAM.TEMPLATES", templates, "MODEL.CDAM.SC_CLIP.PRE_ADJUST_LAYER", "1",
            "MODEL.CDAM.SC_CLIP.POST_ADJUST_LAYER", "0", "MODEL.CDAM.SC_CLIP.MULTI_LEVEL_LAYERS", "(0, 2)",
            "MODEL.CDAM.RESCLIP.RCS_LAYERS", "(0, 2)"])
        cls.image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)

    @classmethod
    def tearDownClass(cls):
        cls.segmenter.close()
        cls._tmp.cleanup()

    def test_handler_shows_the_clicked_patch(self):
        from cdam_d2.cdam.visualize import image_patch_attention

        config = os.path.basename(CDAM_TOY_CONFIG)
        vocabulary = "background; cat, kitten; grass"
        tiles = self.segmenter.patch_attention_tiles(self.image, vocabulary, config, "sclip", (70, 12))
        self.assertEqual([t.title for t in tiles], ["CDAM attention of patch (70, 12)", "sclip attention of patch (70, 12)"])
        predictor = self.segmenter.predictor(config, "sclip", True)
        self.assertEqual(predictor.names, ["background", "cat", "grass"])  # the page's vocabulary is used
        cfg = self.segmenter.cfgs[config]
        found = image_patch_attention(predictor.model, self.image, predictor.queries, (70, 12),
                                      cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        np.testing.assert_array_equal(tiles[0].array, found.attention.cdam.numpy())
        np.testing.assert_array_equal(tiles[1].array, found.attention.base.numpy())
        picture = self.segmenter.patch_attention(self.image, vocabulary, config, "sclip",
                                                 SimpleNamespace(index=[70, 12]))
        self.assertEqual(picture.dtype, np.uint8)
        self.assertEqual(picture.ndim, 3)

    def test_multi_layer_bases_show_their_attention(self):
        from cdam_d2.cdam.visualize import image_patch_attention

        config = os.path.basename(CDAM_TOY_CONFIG)
        cfg = self.segmenter.cfgs[config]
        for base in ("sc_clip", "resclip"):
            with self.subTest(base=base):
                tiles = self.segmenter.patch_attention_tiles(self.image, "background; cat; grass", config, base,
                                                             (30, 40))
                self.assertEqual(tiles[1].title, f"{base} attention of patch (30, 40)")
                predictor = self.segmenter.predictor(config, base, True)
                self.assertEqual(predictor.model.segmentor.encoder.base, base)
                found = image_patch_attention(predictor.model, self.image, predictor.queries, (30, 40),
                                              cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
                np.testing.assert_array_equal(tiles[1].array, found.attention.base.numpy())
                self.assertTrue(np.isfinite(tiles[1].array).all())

    def test_page_offers_every_base(self):
        from cdam_d2.cdam.modeling.dense_clip import BASES

        config = self.web_demo.build_page(self.segmenter).get_config_file()
        dropdown = next(c for c in config["components"] if c["props"].get("elem_id") == "base")
        self.assertEqual([choice[1] for choice in dropdown["props"]["choices"]], list(BASES))

    def test_errors_are_shown_on_the_page(self):
        import gradio as gr

        config = os.path.basename(CDAM_TOY_CONFIG)
        with self.assertRaisesRegex(gr.Error, "CDAM config"):
            self.segmenter.patch_attention_tiles(self.image, "", os.path.basename(CLUSTERCAM_TOY_CONFIG), "sclip",
                                                 (1, 1))
        with self.assertRaisesRegex(gr.Error, "Upload or drop an image"):
            self.segmenter.patch_attention_tiles(None, "", config, "sclip", (1, 1))
        with self.assertRaisesRegex(gr.Error, "outside the 80x60 image"):
            self.segmenter.patch_attention_tiles(self.image, "", config, "sclip", (80, 1))

    def test_page_wires_the_select_event_of_the_input_image(self):
        page = self.web_demo.build_page(self.segmenter)
        config = page.get_config_file()
        ids = {component["props"].get("elem_id"): component["id"] for component in config["components"]}
        selects = [dependency for dependency in config["dependencies"]
                   if [ids["input-image"], "select"] in [list(target) for target in dependency["targets"]]]
        self.assertEqual(len(selects), 1)
        self.assertEqual(selects[0]["outputs"], [ids["patch-attention"]])


if __name__ == "__main__":
    unittest.main()
