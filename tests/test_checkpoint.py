import os
import tempfile
import unittest

import torch
from torch import nn

from tests.d2_guard import requires_detectron2


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


@requires_detectron2
class CoveringCheckpointerTest(unittest.TestCase):
    def _save(self, state, directory):
        path = os.path.join(directory, "weights.pth")
        torch.save({"model": state}, path)
        return path

    def test_complete_checkpoint_loads(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        source, target = TwoLayers(), TwoLayers()
        with tempfile.TemporaryDirectory() as tmp:
            CoveringCheckpointer(target).load(self._save(source.state_dict(), tmp))
        for a, b in zip(source.parameters(), target.parameters()):
            self.assertTrue(torch.equal(a, b))

    def test_missing_or_misshapen_weights_raise(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        state = TwoLayers().state_dict()
        unprefixed = {key.replace("net.", "", 1): value for key, value in state.items()}
        misshapen = dict(state, **{"net.1.weight": torch.zeros(5, 4)})
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(RuntimeError, r"4 model weights are missing.*net\.0\.weight"):
                CoveringCheckpointer(TwoLayers()).load(self._save(unprefixed, tmp))
            with self.assertRaisesRegex(RuntimeError, r"1 have the wrong shape.*net\.1\.weight"):
                CoveringCheckpointer(TwoLayers()).load(self._save(misshapen, tmp))


if __name__ == "__main__":
    unittest.main()
