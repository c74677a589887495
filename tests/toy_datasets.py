"""A test-class mixin: the toy datasets in a temporary folder, with every cdam_* name pointing at them."""
import os
import tempfile


class RegisteredToyDatasets:
    """``cls.root``: toy datasets (``cls._tmp`` holds them) registered for the class's tests; the
    default root is registered again afterwards. Needs detectron2."""

    @classmethod
    def setUpClass(cls):
        import cdam_d2
        from cdam_d2.data.toy import make_toy_datasets

        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = os.path.join(cls._tmp.name, "datasets")
        make_toy_datasets(cls.root)
        cdam_d2.register_all_cdam_datasets(cls.root)

    @classmethod
    def tearDownClass(cls):
        import cdam_d2
        from cdam_d2.data.datasets import default_datasets_root

        cdam_d2.register_all_cdam_datasets(default_datasets_root())
        cls._tmp.cleanup()
        super().tearDownClass()
