"""N processes train like one: a batch split over 2 CPU processes (gloo, Detectron2's ``launch``)
gives the losses and gradients of one process holding the whole batch, also for the bg/fg-balanced
segmentation loss (the mean of the background and the foreground cross-entropies, each averaged over its
pixels in the whole batch) when one process's images have no foreground."""
import os
import tempfile
import unittest

import torch

from tests.helpers import CLUSTERCAM_TOY_CONFIG, requires_detectron2, slow, toy_cfg

# Deterministic training step: no DropPath (toy config), no RandomErasing, segmentation phase on.
OPTS = ["MODEL.CLUSTERCAM.INPUT.RANDOM_ERASING_PROB", "0.0", "MODEL.CLUSTERCAM.LOSS.SEG_START_ITER", "0"]


def crafted_segmentation_case():
    """Logits (4, 3, 4, 4) and labels (4, 8, 8): images 0-1 hold background and foreground,
    images 2-3 (the second process's shard) background and ignore only."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (4, 8, 8), generator=generator)
    labels[2:] = torch.where(labels[2:] > 0, torch.full_like(labels[2:], 255), labels[2:])
    labels[0, :3] = 255
    return logits, labels


def training_step(batch, world_size=1, rank=0):
    """Losses and gradients of one ClusterCAM training step on this process's shard of ``batch``."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from cdam_d2.engine.trainer import wrap_ddp

    cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, *OPTS)
    torch.manual_seed(0)  # the same initial weights in every process
    model = wrap_ddp(build_model(cfg), cfg)
    model.train()
    shard = len(batch) // world_size
    with EventStorage(0):
        losses = model(batch[rank * shard:(rank + 1) * shard])
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, {k.removeprefix("module."): v for k, v in grads.items()}


def distributed_worker(batch_file, result_file):
    from detectron2.utils import comm
    from torch import distributed as dist

    from cdam_d2.clustercam.modeling import balanced_segmentation_loss

    rank, world_size = comm.get_rank(), comm.get_world_size()
    batch = torch.load(batch_file, weights_only=True)
    losses, grads = training_step(batch, world_size, rank)
    # Detectron2 logs each loss averaged over processes.
    logged = {k: sum(comm.all_gather(v.item())) / world_size for k, v in losses.items()}

    logits, labels = crafted_segmentation_case()
    logits.requires_grad_(True)
    shard = slice(2 * rank, 2 * rank + 2)
    seg_loss = balanced_segmentation_loss(logits[shard], labels[shard], across_processes=True)
    seg_loss.backward()
    dist.all_reduce(logits.grad)  # DDP's gradient average: sum / world size
    per_process = balanced_segmentation_loss(logits[shard].detach(), labels[shard])
    result = {"logged": logged, "grads": grads, "seg_loss": sum(comm.all_gather(seg_loss.item())) / world_size,
              "seg_grad": logits.grad / world_size,
              "per_process_seg_loss": sum(comm.all_gather(per_process.item())) / world_size}
    if rank == 0:
        torch.save(result, result_file)


@slow
@requires_detectron2
class TestTwoProcessesTrainLikeOne(unittest.TestCase):
    def test_same_losses_and_gradients(self):
        from cdam_d2.engine import launch  # Detectron2's, releasing the process group at the end

        from cdam_d2.clustercam.modeling import balanced_segmentation_loss

        generator = torch.Generator().manual_seed(1)
        batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator),
                  "height": 64, "width": 64, "file_name": f"img{i}.jpg", "image_labels": labels}
                 for i, labels in enumerate([[1], [2, 3], [15], [1, 15]])]
        with tempfile.TemporaryDirectory() as tmp:
            batch_file, result_file = os.path.join(tmp, "batch.pt"), os.path.join(tmp, "result.pt")
            torch.save(batch, batch_file)
            launch(distributed_worker, 2, dist_url="auto", args=(batch_file, result_file))
            two = torch.load(result_file, weights_only=True)

        losses, grads = training_step(batch)
        self.assertEqual(set(two["logged"]), {"loss_cls", "loss_pat", "loss_seg"})
        for name, value in losses.items():
            self.assertAlmostEqual(two["logged"][name], value.item(), places=6, msg=name)
        self.assertEqual(set(two["grads"]), set(grads))
        for name, grad in grads.items():
            torch.testing.assert_close(two["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)

        logits, labels = crafted_segmentation_case()
        logits.requires_grad_(True)
        whole = balanced_segmentation_loss(logits, labels)
        whole.backward()
        self.assertAlmostEqual(two["seg_loss"], whole.item(), places=6)
        torch.testing.assert_close(two["seg_grad"], logits.grad)
        # Normalising per process (what the per-rank means gave) is a different loss here.
        self.assertGreater(abs(two["per_process_seg_loss"] - whole.item()), 0.01)


if __name__ == "__main__":
    unittest.main()
