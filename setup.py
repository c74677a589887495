"""cdam_d2: CDAM and ClusterCAM as a Detectron2 plugin.

torch, torchvision and detectron2 are deliberately not in install_requires: install torch and
torchvision first, then detectron2 from its official source (see README.md).
"""
from setuptools import find_packages, setup

setup(
    name="cdam_d2",
    version="0.1.0",
    description="CDAM (training-free open-vocabulary segmentation) and ClusterCAM (weakly "
    "supervised segmentation) for Detectron2",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["cdam_d2", "cdam_d2.*"]),
    # class-name files, and the training-free peers' own name files (unchanged) under peers/<peer>/
    package_data={"cdam_d2": ["data/class_names/*.txt", "data/class_names/peers/*/*.txt"]},
    install_requires=[
        "numpy",
        "pillow",
        "scipy",
        "tqdm",
        "fvcore",
        "pycocotools",
        "opencv-python-headless",
        "open_clip_torch>=2.26.1",  # transformer.batch_first; the CDAM tests pass on 2.26.1 and 3.3
        "timm>=0.9",
        "pydensecrf2",
    ],
    extras_require={
        # tools/web_demo.py (gradio 6 API)
        "demo": ["gradio>=6.0"],
        # the browser test drives the web demo in Chromium (Debian: chromium chromium-driver) with selenium;
        # cityscapesscripts is the reference that tools/prepare_cityscapes.py is checked against
        "test": ["pytest", "gradio>=6.0", "selenium>=4.11", "cityscapesscripts"],
    },
)
