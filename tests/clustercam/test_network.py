"""ClusterCAM network: shapes and parameter counts, clustering, attention features, position embedding and
training behaviour, and an independent re-derivation of the forward from the formulas of the architecture."""
import math
import unittest
from unittest import mock

import torch
from torch.nn import functional as F

from cdam_d2.clustercam.modeling import ClusterAttention, ClusterCAMNet, interpolate_patch_pos_embed
from cdam_d2.clustercam.modeling import blocks as blocks_module
from cdam_d2.clustercam.modeling import network as network_module


def tiny_net(num_classes=3, **overrides):
    kwargs = dict(embed_dim=24, depth=3, num_heads=2, cluster_depth=3, cam_last_layers=2,
                  drop_path=0.0, decoder_dim=16)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return ClusterCAMNet(num_classes, **kwargs)


# ------------------------------------------ reference written from the formulas of the architecture
def _ln(x, norm, eps):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, eps)


def _linear(x, layer):
    return x @ layer.weight.T + layer.bias


def _mhsa(tokens, qkv_layer, heads):
    batch, length, dim = tokens.shape
    head_dim = dim // heads
    q, k, v = _linear(tokens, qkv_layer).split(dim, dim=-1)
    q, k, v = (t.reshape(batch, length, heads, head_dim).permute(0, 2, 1, 3) for t in (q, k, v))
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(head_dim), dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", weights, v).permute(0, 2, 1, 3).reshape(batch, length, dim)
    return out, weights


def _adaptive_pool_reference(grid, out_h, out_w):
    """Average pooling with PyTorch's adaptive windows, written out."""
    rows = []
    in_h, in_w = grid.shape[-2:]
    for i in range(out_h):
        r0, r1 = (i * in_h) // out_h, -((-(i + 1) * in_h) // out_h)
        cols = []
        for j in range(out_w):
            c0, c1 = (j * in_w) // out_w, -((-(j + 1) * in_w) // out_w)
            cols.append(grid[..., r0:r1, c0:c1].mean(dim=(-2, -1)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def reference_block(block, x, grid, num_cls, heads):
    """Cluster block from the formulas: returns (x_out, P, G̃)."""
    att = block.st_attn
    batch, _, dim = x.shape
    out_a, weights = _mhsa(_ln(x, att.ln_pat, 1e-5), att.qkv, heads)
    out_a = _linear(out_a, att.proj)
    patch_attn, class_attn = weights[:, :, num_cls:, num_cls:], weights[:, :, :num_cls, num_cls:]
    x_cls, x_pat = x[:, :num_cls], x[:, num_cls:]
    z = _ln(_linear(x_pat, att.proj_st), att.ln_pat2, 1e-5)
    hp, wp = grid
    z_grid = z.transpose(1, 2).reshape(batch, dim, hp, wp)
    centroids = _adaptive_pool_reference(z_grid, hp // 2, wp // 2).flatten(2).transpose(1, 2)
    for _ in range(3):
        assign = torch.softmax(torch.einsum("bnc,bmc->bnm", z, centroids) / math.sqrt(dim), dim=-1)
        centroids = torch.einsum("bnm,bnc->bmc", assign, z) / (assign.sum(1)[..., None] + 1e-8)
    y = torch.cat([_ln(x_cls, att.ln_cls, 1e-5), _ln(centroids, att.ln_st, 1e-5)], dim=1)
    out_b, b_weights = _mhsa(y, att.qkv_stsa, heads)
    out_b_cls = _linear(out_b[:, :num_cls], att.proj_cls)
    out_b_pat = torch.einsum("bnm,bmc->bnc", assign, out_b[:, num_cls:])
    g_hat = torch.einsum("bnm,bhkm->bhkn", assign, b_weights[:, :, :num_cls, num_cls:])
    alpha = att.mix_param
    mixed = (1 - alpha) * class_attn + alpha * g_hat
    x = x + out_a + torch.cat([out_b_cls, out_b_pat], dim=1)
    hidden = F.gelu(_linear(_ln(x, block.norm2, 1e-6), block.mlp.fc1))
    x = x + _linear(hidden, block.mlp.fc2)
    return x, patch_attn, mixed


def reference_network(net, images, heads):
    """Normal forward and CAM mode from the formulas: (cls_logits, pat_logits, segs, cams)."""
    num_cls, dim = net.num_classes, net.embed_dim
    height, width = images.shape[-2:]
    hp, wp = height // 16, width // 16
    conv = net.patch_embed.proj
    x = F.conv2d(images, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2)
    pos = net.pos_embed
    if hp * wp != 14 * 14 or height != width:
        grid = pos[:, num_cls:].reshape(1, 14, 14, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((hp + 0.1) / 14, (wp + 0.1) / 14), mode="bicubic",
                             align_corners=False)
        pos = torch.cat([pos[:, :num_cls], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    x = torch.cat([net.cls_token.expand(len(images), -1, -1), x], dim=1) + pos
    patch_attns, class_attns = [], []
    for block in net.blocks:
        x, patch_attn, class_attn = reference_block(block, x, (hp, wp), num_cls, heads)
        patch_attns.append(patch_attn)
        class_attns.append(class_attn)
    batch = len(images)
    patch_map = x[:, num_cls:].transpose(1, 2).reshape(batch, dim, hp, wp)
    phi = torch.stack(class_attns, dim=1).reshape(batch, -1, hp, wp)
    feats = torch.cat([patch_map, phi], dim=1)
    cls_logits = x[:, :num_cls].mean(-1)
    pat_logits = F.conv2d(feats, net.head.weight, net.head.bias, padding=1).mean((2, 3))
    dec = net.decoder
    segs = F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(feats, dec.conv6.weight, padding=5, dilation=5)),
                                    dec.conv7.weight, padding=5, dilation=5)), dec.conv8.weight)
    cam0 = F.relu(F.conv2d(feats, net.head.weight, padding=1)).flatten(2)
    weight = sum(a.mean(1) for a in class_attns[-net.cam_last_layers:])
    affinity = sum(p.mean(1) for p in patch_attns)
    cams = torch.einsum("bij,bkj->bki", affinity, cam0 * weight).reshape(batch, num_cls, hp, wp)
    return cls_logits, pat_logits, segs, cams


class TestReDerivation(unittest.TestCase):
    def test_network_matches_formulas(self):
        net = tiny_net(num_classes=3).double().eval()
        for size in [(64, 64), (75, 100), (224, 224), (50, 37)]:
            images = torch.randn(2, 3, *size, dtype=torch.float64)
            with torch.no_grad():
                got = net(images) + (net.forward_cams(images),)
                want = reference_network(net, images, heads=2)
            for name, a, b in zip(["cls", "pat", "segs", "cams"], got, want):
                self.assertEqual(a.shape, b.shape, (size, name))
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"{name} at {size}")


class TestShapesAndCounts(unittest.TestCase):
    def test_full_deit_small_parameters(self):
        for num_classes, total in [(20, 41_681_696), (80, 65_760_476)]:
            with torch.device("meta"):
                net = ClusterCAMNet(num_classes)
            self.assertEqual(sum(p.numel() for p in net.parameters()), total)
            feature_dim = 384 + 72 * num_classes
            self.assertEqual(tuple(net.cls_token.shape), (1, num_classes, 384))
            self.assertEqual(tuple(net.pos_embed.shape), (1, 196 + num_classes, 384))
            self.assertEqual(tuple(net.head.weight.shape), (num_classes, feature_dim, 3, 3))
            self.assertEqual(tuple(net.decoder.conv6.weight.shape), (512, feature_dim, 3, 3))
            self.assertEqual(tuple(net.decoder.conv8.weight.shape), (num_classes + 1, 512, 1, 1))
            self.assertIsNone(net.decoder.conv6.bias)
            self.assertTrue(all(b.st_attn.mix_param.shape == (1,) for b in net.blocks))

    def test_output_shapes_any_size(self):
        net = tiny_net(num_classes=4).eval()
        cases = {(448, 448): (28, 28), (336, 336): (21, 21), (375, 500): (23, 31), (250, 188): (15, 11),
                 (470, 470): (29, 29), (32, 32): (2, 2), (20, 40): (1, 2)}
        with torch.no_grad():
            for size, grid in cases.items():
                cls_logits, pat_logits, segs = net(torch.randn(2, 3, *size))
                self.assertEqual(tuple(cls_logits.shape), (2, 4))
                self.assertEqual(tuple(pat_logits.shape), (2, 4))
                self.assertEqual(tuple(segs.shape), (2, 5) + grid, size)
                self.assertEqual(tuple(net.forward_cams(torch.randn(1, 3, *size)).shape), (1, 4) + grid)
                self.assertIsNone(net(torch.randn(1, 3, *size), with_segmentation=False)[2])
        with self.assertRaises(ValueError):
            net(torch.randn(1, 3, 15, 64))


class TestClustering(unittest.TestCase):
    def test_cluster_count_and_assignment(self):
        net = tiny_net(num_classes=2, depth=1, cluster_depth=1, cam_last_layers=1).eval()
        seen = []
        original = blocks_module.soft_kmeans

        def spy(features, centroids, num_iters):
            assignment, final = original(features, centroids, num_iters)
            seen.append((centroids, assignment, final, features))
            return assignment, final

        cases = {(448, 448): 196, (336, 336): 100, (560, 560): 289, (224, 224): 49, (375, 500): 165}
        with mock.patch.object(blocks_module, "soft_kmeans", spy), torch.no_grad():
            for size, clusters in cases.items():
                seen.clear()
                net(torch.randn(1, 3, *size))
                initial, assignment, final, features = seen[0]
                self.assertEqual(initial.shape[1], clusters, size)
                torch.testing.assert_close(assignment.sum(-1), torch.ones_like(assignment[..., 0]))
                # Centroids are convex combinations of the features: weights S/ΣS.
                weights = assignment / (assignment.sum(1, keepdim=True) + 1e-8)
                torch.testing.assert_close(final, weights.transpose(1, 2) @ features)

    def test_stale_assignment(self):
        torch.manual_seed(1)
        features, centroids = torch.randn(1, 12, 8), torch.randn(1, 3, 8)
        assignment, final = blocks_module.soft_kmeans(features, centroids, 3)
        c = centroids
        for _ in range(2):
            s = (features @ c.transpose(1, 2) / math.sqrt(8)).softmax(-1)
            c = s.transpose(1, 2) @ features / (s.sum(1)[..., None] + 1e-8)
        torch.testing.assert_close(assignment, (features @ c.transpose(1, 2) / math.sqrt(8)).softmax(-1))

    def test_no_cluster_fits(self):
        torch.manual_seed(0)
        attention = ClusterAttention(16, 2, num_class_tokens=3)
        with torch.no_grad():
            attention.mix_param.fill_(0.3)
            x = torch.randn(2, 3 + 3, 16)
            _, cluster_out, _, mixed = attention(x, (1, 3))
            attention.use_clusters = False
            _, none_out, _, unmixed = attention(x, (1, 3))
        self.assertIsNone(none_out)
        self.assertTrue(torch.equal(cluster_out[:, 3:], torch.zeros_like(cluster_out[:, 3:])))
        torch.testing.assert_close(mixed, 0.7 * unmixed)


class TestAttentionFeatures(unittest.TestCase):
    def test_phi_layout_ranges_and_cam(self):
        net = tiny_net(num_classes=3).eval()
        images = torch.randn(2, 3, 64, 96)
        with torch.no_grad():
            out = net.forward_features(images, with_patch_affinity=True)
            cams = net.forward_cams(images)
        feats, attns = out["features"], out["class_attn"]
        self.assertEqual(feats.shape[1], 24 + 3 * 2 * 3)
        for layer in range(3):
            for head in range(2):
                for k in range(3):
                    channel = 24 + (layer * 2 + head) * 3 + k
                    torch.testing.assert_close(feats[:, channel].flatten(1), attns[layer][:, head, k])
        phi = feats[:, 24:]
        self.assertTrue(bool((phi >= 0).all() and (phi <= 1).all()))
        self.assertTrue(bool((out["patch_affinity"].sum(-1) < 3).all()))
        self.assertTrue(bool((cams >= 0).all()))

    def test_global_attention_rows_leak_to_class_tokens(self):
        net = tiny_net(num_classes=3).eval()
        for block in net.blocks:
            block.st_attn.mix_param.data.zero_()  # G̃ = G
        with torch.no_grad():
            out = net.forward_features(torch.randn(1, 3, 64, 64), with_patch_affinity=True)
        for attn in out["class_attn"]:
            self.assertTrue(bool((attn.sum(-1) < 1).all()))
        self.assertTrue(bool((out["patch_affinity"].sum(-1) < 3).all()))

    def test_cam_ignores_head_bias(self):
        net = tiny_net(num_classes=3).eval()
        images = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            cams, (_, pat, _) = net.forward_cams(images), net(images)
            net.head.bias.add_(5.0)
            cams2, (_, pat2, _) = net.forward_cams(images), net(images)
        torch.testing.assert_close(cams, cams2)
        torch.testing.assert_close(pat2, pat + 5.0)


class TestPositionEmbedding(unittest.TestCase):
    def test_when_resampled(self):
        net = tiny_net(num_classes=2, depth=1, cluster_depth=1, cam_last_layers=1).eval()
        calls = []
        original = network_module.interpolate_patch_pos_embed

        def spy(patch_pos, grid_size):
            calls.append(tuple(grid_size))
            return original(patch_pos, grid_size)

        with mock.patch.object(network_module, "interpolate_patch_pos_embed", spy), torch.no_grad():
            for size in [(224, 224), (224, 230), (448, 448), (100, 60)]:
                net(torch.randn(1, 3, *size))
        self.assertEqual(calls, [(14, 14), (28, 28), (6, 3)])

    def test_scale_factor_rule(self):
        torch.manual_seed(0)
        patch_pos = torch.randn(1, 196, 8)
        grid = patch_pos.reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
        by_scale = F.interpolate(grid, scale_factor=(28.1 / 14, 28.1 / 14), mode="bicubic", align_corners=False)
        by_size = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
        got = interpolate_patch_pos_embed(patch_pos, (28, 28))
        torch.testing.assert_close(got, by_scale.permute(0, 2, 3, 1).reshape(1, -1, 8))
        self.assertGreater((by_scale - by_size).abs().max().item(), 0.05)
        # 14x14 -> 14x14 through the +0.1 rule is not the identity (224x230 inputs).
        self.assertFalse(torch.allclose(interpolate_patch_pos_embed(patch_pos, (14, 14)), patch_pos))

    def test_gradient_reaches_stored_grid(self):
        net = tiny_net(num_classes=2, depth=1, cluster_depth=1, cam_last_layers=1)
        cls_logits, pat_logits, _ = net(torch.randn(1, 3, 96, 64), with_segmentation=False)
        (cls_logits.sum() + pat_logits.sum()).backward()
        self.assertGreater(net.pos_embed.grad[:, 2:].abs().sum().item(), 0)


class TestTrainingBehaviour(unittest.TestCase):
    def test_stochastic_only_in_train_mode(self):
        net = tiny_net(num_classes=3, drop_path=0.5)
        images = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            net.eval()
            torch.testing.assert_close(net.forward_cams(images), net.forward_cams(images))
            net.train()
            self.assertFalse(torch.allclose(net.forward_cams(images), net.forward_cams(images)))

    def test_gradient_reach_in_classification_phase(self):
        net = tiny_net(num_classes=3)
        labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        _, pat_logits, segs = net(torch.randn(2, 3, 64, 64), with_segmentation=False)
        self.assertIsNone(segs)
        F.multilabel_soft_margin_loss(pat_logits, labels).backward()
        for name, param in net.named_parameters():
            if name.startswith(("decoder.", "norm.")):
                self.assertIsNone(param.grad, name)
        for index, block in enumerate(net.blocks):
            att = block.st_attn
            self.assertNotEqual(att.mix_param.grad.item(), 0.0, index)
            for module in (att.proj_st, att.ln_pat2, att.qkv_stsa, att.ln_st):
                self.assertGreater(module.weight.grad.abs().sum().item(), 0, index)


if __name__ == "__main__":
    unittest.main()
