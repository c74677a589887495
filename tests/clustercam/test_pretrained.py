"""DeiT weights into ClusterCAM: the mapping (per block, the four LayerNorms from DeiT's norm1, both qkv from
attn.qkv, both projections from attn.proj; proj_st, mix_param, head and decoder left as initialised; all class
tokens identical after loading), the official-checkpoint converter, and a damaged DeiT file that names itself."""
import os
import tempfile
import unittest

import torch

from cdam_d2.clustercam.modeling import (
    ClusterCAMNet,
    convert_official_checkpoint,
    deit_to_clustercam,
    load_deit_weights,
)
from tests.helpers import requires_detectron2, truncate_half


def fake_deit_state(depth=2, embed_dim=48, num_heads=2):
    """State dict of a randomly initialised timm DeiT/ViT with the given shape."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(123)
    model = VisionTransformer(img_size=224, patch_size=16, embed_dim=embed_dim, depth=depth,
                              num_heads=num_heads, num_classes=1000)
    state = model.state_dict()
    # timm initialises cls_token with tiny values; make them distinctive so copies are checkable.
    state["cls_token"] = torch.randn_like(state["cls_token"])
    return state


def tiny_net(num_classes=5, depth=2):
    torch.manual_seed(0)
    return ClusterCAMNet(num_classes, embed_dim=48, depth=depth, num_heads=2, cluster_depth=depth,
                         cam_last_layers=depth, drop_path=0.0, decoder_dim=16)


class TestDeiTMapping(unittest.TestCase):
    def test_mapping_properties(self):
        deit = fake_deit_state()
        net = tiny_net()
        untouched = {k: v.clone() for k, v in net.state_dict().items()
                     if k.startswith(("head.", "decoder.")) or ".proj_st." in k or k.endswith("mix_param")}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "deit.pth")
            torch.save({"model": deit, "epoch": 300}, path)
            loaded = load_deit_weights(net, path)
        state = net.state_dict()
        for key in loaded:
            self.assertNotIn(key, untouched)
        for i in range(2):
            block = f"blocks.{i}."
            for target in ("ln_pat", "ln_pat2", "ln_cls", "ln_st"):
                for param in ("weight", "bias"):
                    self.assertTrue(torch.equal(state[f"{block}st_attn.{target}.{param}"],
                                                deit[f"{block}norm1.{param}"]))
            for target, source in [("qkv", "attn.qkv"), ("qkv_stsa", "attn.qkv"), ("proj", "attn.proj"),
                                   ("proj_cls", "attn.proj")]:
                for param in ("weight", "bias"):
                    self.assertTrue(torch.equal(state[f"{block}st_attn.{target}.{param}"],
                                                deit[f"{block}{source}.{param}"]))
            for name in ("norm2.weight", "mlp.fc1.weight", "mlp.fc2.bias"):
                self.assertTrue(torch.equal(state[block + name], deit[block + name]))
        for key, value in untouched.items():
            self.assertTrue(torch.equal(state[key], value), key)
        self.assertTrue(torch.equal(state["patch_embed.proj.weight"], deit["patch_embed.proj.weight"]))
        self.assertTrue(torch.equal(state["norm.weight"], deit["norm.weight"]))
        self.assertTrue(torch.equal(state["cls_token"], deit["cls_token"].expand(1, 5, 48)))
        self.assertTrue(torch.equal(state["pos_embed"][:, :5], deit["pos_embed"][:, :1].expand(1, 5, 48)))
        self.assertTrue(torch.equal(state["pos_embed"][:, 5:], deit["pos_embed"][:, 1:]))

    def test_class_symmetry_after_loading(self):
        net = tiny_net()
        net.load_state_dict(deit_to_clustercam(fake_deit_state(), net.state_dict()), strict=False)
        net.eval()
        with torch.no_grad():
            cls_logits, pat_logits, _ = net(torch.randn(2, 3, 64, 80))
        spread = cls_logits.max(dim=1).values - cls_logits.min(dim=1).values
        self.assertLess(spread.abs().max().item(), 1e-5)
        self.assertGreater((pat_logits.max(1).values - pat_logits.min(1).values).min().item(), 1e-4)

    def test_incompatible_checkpoints_fail_clearly(self):
        net = tiny_net(depth=3)
        with self.assertRaisesRegex(KeyError, "blocks.2"):
            deit_to_clustercam(fake_deit_state(depth=2), net.state_dict())
        with self.assertRaisesRegex(ValueError, "EMBED_DIM"):
            deit_to_clustercam(fake_deit_state(depth=3, embed_dim=64), net.state_dict())
        with self.assertRaisesRegex(FileNotFoundError, "PRETRAINED"):
            load_deit_weights(net, "/nonexistent/deit.pth")
        with self.assertRaisesRegex(RuntimeError, "Offline"):
            load_deit_weights(net, "no_such_timm_model_name")

    def test_larger_position_grid_is_resampled(self):
        from timm.models.vision_transformer import VisionTransformer

        deit = VisionTransformer(img_size=384, patch_size=16, embed_dim=48, depth=2, num_heads=2).state_dict()
        mapped = deit_to_clustercam(deit, tiny_net().state_dict())
        self.assertEqual(tuple(mapped["pos_embed"].shape), (1, 5 + 196, 48))


class TestOfficialConverter(unittest.TestCase):
    def test_round_trip(self):
        net = tiny_net()
        official = {"model": {"module." + k: v.clone() for k, v in net.state_dict().items()}}
        converted = convert_official_checkpoint(official, prefix="net.")
        self.assertEqual(set(converted), {"net." + k for k in net.state_dict()})
        other = tiny_net()
        torch.manual_seed(7)
        for param in other.parameters():
            param.data.normal_()
        other.load_state_dict({k[len("net."):]: v for k, v in converted.items()}, strict=True)
        images = torch.randn(1, 3, 48, 64)
        net.eval(), other.eval()
        with torch.no_grad():
            for a, b in zip(net(images), other(images)):
                torch.testing.assert_close(a, b)


@requires_detectron2
class TruncatedDeiTWeightsTest(unittest.TestCase):
    def test_truncated_pretrained_file_names_the_key(self):
        from cdam_d2.clustercam.modeling.pretrained import load_deit_state_dict
        from cdam_d2.weights import WeightsFileError

        with tempfile.TemporaryDirectory() as root:
            path = os.path.join(root, "deit_small_patch16_224-cd65a155.pth")
            torch.save({"model": {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8)}}, path)
            self.assertEqual(set(load_deit_state_dict(path)), {"cls_token", "pos_embed"})
            truncate_half(path)
            with self.assertRaises(WeightsFileError) as raised:
                load_deit_state_dict(path)
        message = str(raised.exception)
        for expected in (path, "MODEL.CLUSTERCAM.PRETRAINED", "download deit_small_patch16_224-cd65a155.pth again"):
            self.assertIn(expected, message)


if __name__ == "__main__":
    unittest.main()
