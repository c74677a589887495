"""tools/web_demo.py in a real headless browser: load the page, upload an image, submit a vocabulary, see
the overlay and legend, download the label PNG.

Needs gradio and selenium (pip) and Chromium with its driver (Debian: `apt-get install chromium
chromium-driver`); without them the test is skipped with one line saying what is missing. Set
CDAM_D2_WEB_DEMO_SCREENSHOT=path.png to keep the page's screenshot (docs/web_demo.png comes from it).
"""
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy as np

from tests.helpers import (CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, REPO, TOOLS, import_tool, one_template_file,
                           requires_detectron2, slow, subprocess_env)

CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None)
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1080")
MISSING = [name for name, present in [("gradio", importlib.util.find_spec("gradio")),
                                      ("selenium", importlib.util.find_spec("selenium")),
                                      ("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)] if not present]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url, process, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"web_demo exited with {process.returncode}:\n{process.stdout.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"web_demo did not answer at {url} within {timeout} s")


def write_scene(path):
    """A picture with three flat regions: sky, a red square, grass."""
    from PIL import Image

    image = np.zeros((240, 320, 3), np.uint8)
    image[:120] = (110, 160, 225)
    image[120:] = (70, 150, 60)
    image[70:190, 100:220] = (205, 55, 45)
    Image.fromarray(image).save(path)


@requires_detectron2
@unittest.skipIf(importlib.util.find_spec("gradio") is None, "the web demo needs gradio (pip install -e .[demo])")
class TestWebDemoCallbacks(unittest.TestCase):
    def test_cdam_and_clustercam_configs_behind_one_page(self):
        import gradio as gr
        from PIL import Image

        web_demo = import_tool("web_demo")
        with tempfile.TemporaryDirectory() as folder:
            templates = one_template_file(folder)
            segmenter = web_demo.Segmenter([CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG], [
                "MODEL.DEVICE", "cpu", "MODEL.CDAM.TEMPLATES", templates, "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"])
            self.addCleanup(segmenter.close)
            image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
            overlay, legend, label_path, _ = segmenter.segment(image, "background; cat, kitten",
                                                               "cdam_voc21_toy_eval.yaml", "sclip", False, 0.4)
            self.assertEqual(overlay.size[1], 512)
            self.assertLessEqual(set(np.unique(np.asarray(Image.open(label_path))).tolist()), {0, 1})
            _, legend, label_path, _ = segmenter.segment(image, "", "clustercam_voc_toy.yaml", "maskclip", True, 0.4)
            self.assertIn("background", legend)
            self.assertEqual(len(segmenter.predictors), 2)
            self.assertIn("untrained", web_demo.describe_weights(segmenter.cfgs["clustercam_voc_toy.yaml"])[1])
            with self.assertRaisesRegex(gr.Error, "empty name"):
                segmenter.segment(image, "cat;;dog", "cdam_voc21_toy_eval.yaml", "sclip", False, 0.4)
            segmenter.close()
            self.assertFalse(os.path.exists(label_path))


@slow
@requires_detectron2
@unittest.skipIf(MISSING, f"web demo browser test needs {', '.join(MISSING)} (see tests/engine/test_web_demo.py)")
class TestWebDemoInBrowser(unittest.TestCase):
    def test_upload_segment_legend_download(self):
        from PIL import Image
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        with tempfile.TemporaryDirectory() as folder:
            templates = one_template_file(folder)
            image_path = os.path.join(folder, "scene.png")
            write_scene(image_path)
            downloads = os.path.join(folder, "downloads")
            port = free_port()
            server_tmp = os.path.join(folder, "tmp")  # where the server keeps its download files
            os.makedirs(server_tmp)
            env = subprocess_env(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                                 GRADIO_TEMP_DIR=os.path.join(folder, "gradio"), TMPDIR=server_tmp)
            server = subprocess.Popen(
                [sys.executable, os.path.join(TOOLS, "web_demo.py"), "--config-file", CDAM_TOY_CONFIG,
                 "--port", str(port), "--opts", "MODEL.DEVICE", "cpu", "MODEL.CDAM.TEMPLATES", templates,
                 "MODEL.CDAM.ALPHA", "0.0"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            driver = None
            try:
                url = f"http://127.0.0.1:{port}/"
                wait_for_server(url, server)
                options = Options()
                options.binary_location = CHROMIUM
                for flag in CHROMIUM_FLAGS:
                    options.add_argument(flag)
                options.add_argument(f"--user-data-dir={os.path.join(folder, 'chromium-profile')}")
                options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                                          "download.prompt_for_download": False})
                driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
                driver.get(url)
                wait = WebDriverWait(driver, 120)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#segment"))
                self.assertIn("RANDOM weights", driver.find_element(By.CSS_SELECTOR, "#banner").text)

                driver.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(image_path)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
                box = driver.find_element(By.CSS_SELECTOR, "#vocabulary textarea")
                box.clear()
                box.send_keys("background; red square; sky, blue sky; grass")
                driver.find_element(By.CSS_SELECTOR, "#segment").click()
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
                           and d.find_elements(By.CSS_SELECTOR, "#overlay img"))

                rows = [row.text.rsplit(" ", 1) for row in driver.find_elements(By.CSS_SELECTOR, "#legend tbody tr")]
                self.assertTrue(rows)
                self.assertLessEqual({name for name, _ in rows}, {"background", "red square", "sky", "grass"})
                self.assertAlmostEqual(sum(float(area.rstrip("%")) for _, area in rows), 100.0, delta=0.3)
                source = driver.find_element(By.CSS_SELECTOR, "#overlay img").get_attribute("src")
                with urllib.request.urlopen(source, timeout=30) as response:
                    overlay = Image.open(io.BytesIO(response.read()))
                self.assertEqual(overlay.size[1], 512)  # 240-px image enlarged to the minimum render side
                self.assertGreater(overlay.size[0], round(320 * 512 / 240))  # legend beside the picture

                driver.find_element(By.CSS_SELECTOR, "#download-labels").click()
                label_file = os.path.join(downloads, "labels.png")
                WebDriverWait(driver, 60).until(lambda d: os.path.isfile(label_file))
                time.sleep(0.5)  # let the browser finish writing
                labels = np.asarray(Image.open(label_file))
                self.assertEqual(labels.shape, (240, 320))
                self.assertLessEqual(int(labels.max()), 3)
                counts = np.bincount(labels.ravel(), minlength=4) / labels.size
                names = ["background", "red square", "sky", "grass"]
                for name, area in rows:  # the legend's areas are those of the downloaded labels
                    self.assertAlmostEqual(100 * counts[names.index(name)], float(area.rstrip("%")), delta=0.06)

                screenshot = os.environ.get("CDAM_D2_WEB_DEMO_SCREENSHOT") or os.path.join(folder, "page.png")
                self.assertTrue(driver.save_screenshot(screenshot))
            finally:
                if driver is not None:
                    driver.quit()
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                server.stdout.close()
            self.assertEqual(os.listdir(server_tmp), [])  # a terminated server removes its files


if __name__ == "__main__":
    unittest.main()
