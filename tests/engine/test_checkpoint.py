"""CoveringCheckpointer: complete / incomplete checkpoints, damaged files, pickled weights."""
import os
import pickle
import tempfile
import unittest

import numpy as np
import torch
from torch import nn

from tests.helpers import CreatesDirectory, requires_detectron2, truncate_half


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def assert_same_weights(test, a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        test.assertTrue(torch.equal(x, torch.as_tensor(y)), name)


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



@requires_detectron2
class DamagedAndPickledWeightsTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.source = TwoLayers()

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.root, name)

    def test_truncated_weights_name_the_file_and_the_key(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer
        from cdam_d2.weights import WeightsFileError

        for name, save in (("zip.pth", torch.save),
                           ("legacy.pth", lambda obj, p: torch.save(obj, p, _use_new_zipfile_serialization=False)),
                           ("zoo.pkl", lambda obj, p: pickle.dump(obj, open(p, "wb")))):
            path = self.path(name)
            save({"model": {k: v.numpy() if name.endswith("pkl") else v
                            for k, v in self.source.state_dict().items()}, "__author__": "test"}, path)
            truncate_half(path)
            with self.subTest(name), self.assertRaises(WeightsFileError) as raised:
                CoveringCheckpointer(TwoLayers()).load(path)
            message = str(raised.exception)
            self.assertIn(path, message)
            self.assertIn("MODEL.WEIGHTS", message)
            self.assertIn("download or copy it again", message)

    def test_truncated_last_checkpoint_on_resume_says_how_to_recover(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer
        from cdam_d2.weights import WeightsFileError

        saver = CoveringCheckpointer(self.source, save_dir=self.root)
        saver.save("model_0000009")  # also writes last_checkpoint
        truncate_half(self.path("model_0000009.pth"))
        with self.assertRaises(WeightsFileError) as raised:
            CoveringCheckpointer(TwoLayers(), save_dir=self.root).resume_or_load("", resume=True)
        message = str(raised.exception)
        self.assertIn(self.path("model_0000009.pth"), message)
        self.assertIn("last checkpoint of OUTPUT_DIR", message)
        self.assertIn(self.path("last_checkpoint"), message)

    def test_pth_that_needs_pickle_is_refused_unless_opted_in(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer
        from cdam_d2.weights import PickledWeightsError

        marker = self.path("code_ran")
        path = self.path("weights.pth")
        torch.save({"model": self.source.state_dict(), "extra": CreatesDirectory(marker)}, path)
        with self.assertRaises(PickledWeightsError) as raised:
            CoveringCheckpointer(TwoLayers()).load(path)
        self.assertFalse(os.path.exists(marker))
        message = str(raised.exception)
        for expected in (path, "MODEL.WEIGHTS", "CDAM_D2.ALLOW_PICKLED_WEIGHTS True", "os.makedirs"):
            self.assertIn(expected, message)

        target = TwoLayers()
        CoveringCheckpointer(target, allow_pickled_weights=True).load(path)  # the user trusts it
        self.assertTrue(os.path.isdir(marker))
        assert_same_weights(self, self.source, target)

    def test_pth_with_numpy_arrays_loads_without_pickle(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        path = self.path("arrays.pth")
        arrays = {key: value.numpy() for key, value in self.source.state_dict().items()}
        torch.save({"model": arrays, "step": np.int64(3)}, path)
        target = TwoLayers()
        extra = CoveringCheckpointer(target).load(path)
        assert_same_weights(self, self.source, target)
        self.assertEqual(extra["step"], 3)

    def test_model_zoo_pkl_of_arrays_loads_without_pickle(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        arrays = {key: value.numpy() for key, value in self.source.state_dict().items()}
        zoo = {"model": arrays, "__author__": "Detectron2 Model Zoo"}
        caffe2 = dict(arrays, **{"net.0.weight_momentum": np.zeros((4, 3), np.float32)})
        for name, data, protocol in (("zoo2.pkl", zoo, 2), ("zoo4.pkl", zoo, 4), ("zoo5.pkl", zoo, 5),
                                     ("caffe2.pkl", caffe2, 2)):
            raw = pickle.dumps(data, protocol=protocol)
            if protocol == 2:  # module names of pickles written with numpy 1 (and Python 2)
                raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            with open(self.path(name), "wb") as f:
                f.write(raw)
            target = TwoLayers()
            with self.subTest(name):
                CoveringCheckpointer(target).load(self.path(name))
                assert_same_weights(self, self.source, target)

    def test_pkl_with_other_objects_is_refused_unless_opted_in(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer
        from cdam_d2.weights import PickledWeightsError

        marker = self.path("code_ran")
        arrays = {key: value.numpy() for key, value in self.source.state_dict().items()}
        path = self.path("evil.pkl")
        with open(path, "wb") as f:
            pickle.dump({"model": arrays, "__author__": CreatesDirectory(marker)}, f)
        with self.assertRaises(PickledWeightsError) as raised:
            CoveringCheckpointer(TwoLayers()).load(path)
        self.assertFalse(os.path.exists(marker))
        for expected in (path, "os.makedirs", "CDAM_D2.ALLOW_PICKLED_WEIGHTS True"):
            self.assertIn(expected, str(raised.exception))
        CoveringCheckpointer(TwoLayers(), allow_pickled_weights=True).load(path)
        self.assertTrue(os.path.isdir(marker))


if __name__ == "__main__":
    unittest.main()
