"""cdam_d2.data.cam_io.read_cam_dict: the files the WSSS releases and the export write load as data, and a
pickle that names anything else is refused before it can run."""
import collections
import os
import pickle
import tempfile
import unittest

import numpy as np

from tests.helpers import CreatesDirectory


def save_object_npy(obj, path):
    """``np.save`` of ``obj`` as a 0-d object array: the layout of a CAM dictionary file."""
    payload = np.empty((), dtype=object)
    payload[()] = obj
    np.save(path, payload, allow_pickle=True)


class ReadCamDictTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)

    def path(self, name):
        return os.path.join(self.folder.name, name)

    def test_release_and_export_files_load_as_they_were_written(self):
        from cdam_d2.data.cam_io import read_cam_dict, save_cam_dict

        rng = np.random.default_rng(0)
        cams = {3: rng.random((4, 5)).astype(np.float32), 11: rng.random((4, 5))}
        np.save(self.path("release.npy"), cams)  # how the releases write them: np.save of a dict
        save_cam_dict(cams, self.path("export.npy"))
        save_object_npy(collections.OrderedDict((np.int64(k), v) for k, v in cams.items()), self.path("ordered.npy"))
        for name in ("release.npy", "export.npy", "ordered.npy"):
            with self.subTest(name=name):
                loaded = read_cam_dict(self.path(name))
                self.assertEqual(sorted(loaded), [3, 11])
                self.assertTrue(all(type(key) is int for key in loaded))
                for key, value in cams.items():
                    np.testing.assert_array_equal(loaded[key], value.astype(np.float32) if name == "export.npy"
                                                  else value)

    def test_a_pickle_naming_other_code_is_refused_without_running_it(self):
        from cdam_d2.data.cam_io import read_cam_dict

        marker = self.path("created_by_the_pickle")
        save_object_npy({0: CreatesDirectory(marker)}, self.path("evil.npy"))
        with self.assertRaisesRegex(ValueError, r"CAM file '.*evil\.npy' is refused: its pickle refers to "
                                                r"(posix|os)\.makedirs"):
            read_cam_dict(self.path("evil.npy"))
        self.assertFalse(os.path.exists(marker))
        np.load(self.path("evil.npy"), allow_pickle=True)  # the unsafe reader does run it: the test is real
        self.assertTrue(os.path.isdir(marker))

    def test_weights_and_cam_files_share_one_array_unpickler(self):
        from cdam_d2 import weights
        from cdam_d2.data import cam_io
        from cdam_d2.utils.array_pickle import ArrayUnpickler, ForbiddenGlobal

        self.assertIs(cam_io.ArrayUnpickler, ArrayUnpickler)
        self.assertIs(weights.ArrayUnpickler, ArrayUnpickler)
        with open(self.path("plain.pkl"), "wb") as f:
            pickle.dump({"blobs": {"w": np.arange(3.0)}}, f, protocol=2)
        with open(self.path("plain.pkl"), "rb") as f:
            np.testing.assert_array_equal(ArrayUnpickler(f).load()["blobs"]["w"], np.arange(3.0))
        with open(self.path("evil.pkl"), "wb") as f:
            pickle.dump(CreatesDirectory(self.path("nope")), f)
        with open(self.path("evil.pkl"), "rb") as f, self.assertRaises(ForbiddenGlobal) as raised:
            ArrayUnpickler(f).load()
        self.assertIn(raised.exception.name, ("posix.makedirs", "os.makedirs"))
        self.assertFalse(os.path.exists(self.path("nope")))


if __name__ == "__main__":
    unittest.main()
