"""tools/benchmark_table.py: methods, bad input, resuming, missing data, the table; end to end on toy data."""
import contextlib
import csv
import io
import json
import os
import tempfile
import time
import unittest
from unittest import mock

from tests.helpers import REPO, point_builtin_datasets_at, requires_detectron2, slow

CONFIGS = os.path.join(REPO, "configs")
KEYS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171", "cityscapes19", "ade20k150")
HEADER = ("| Method | VOC21 | Context60 | COCO-Object | VOC20 | Context59 | COCO-Stuff | Cityscapes | ADE20K "
          "| Average |")


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def _config(path, base, test=None):
    """A config file on top of ``base`` (a shipped config), with ``DATASETS.TEST`` = ``test`` if given."""
    text = f'_BASE_: "{os.path.join(CONFIGS, base)}"\n'
    if test is not None:
        text += f"DATASETS:\n  TEST: {test}\n"
    return _write(path, text)


def _fake_main(values, calls):
    """Stands in for cdam_d2.engine.cli.main: the mIoU of a config file from ``values``."""

    def main(args):
        calls.append(os.path.basename(args.config_file))
        return {"sem_seg": {"mIoU": values[os.path.basename(args.config_file)]}}

    return main


@requires_detectron2
class MethodsTest(unittest.TestCase):
    def test_method_specs_expand_to_the_shipped_configs(self):
        from cdam_d2.cdam.benchmark_table import method_from_spec, plan_cells

        cdam = method_from_spec("cdam", CONFIGS)
        baseline = method_from_spec("variants:sclip_baseline", CONFIGS)
        self.assertEqual(cdam.configs, tuple((key, os.path.join(CONFIGS, f"cdam_{key}.yaml")) for key in KEYS))
        self.assertEqual([path for _, path in baseline.configs],
                         [os.path.join(CONFIGS, "variants", f"cdam_{key}_sclip_baseline.yaml") for key in KEYS])
        plan = plan_cells([cdam, baseline], [], "out")
        self.assertEqual(list(plan), ["cdam", "variants:sclip_baseline"])
        self.assertEqual(list(plan["cdam"]), list(KEYS))
        self.assertEqual(plan["variants:sclip_baseline"]["voc21"].results_file,
                         os.path.join("out", "variants-sclip_baseline", "voc21", "results.json"))
        self.assertEqual(plan["cdam"]["cityscapes19"].benchmark.dataset, "cityscapes_fine_sem_seg_val")
        # The config hash follows the opts.
        changed = plan_cells([cdam], ["MODEL.CDAM.ALPHA", "1.0"], "out")["cdam"]["voc21"]
        self.assertNotEqual(changed.config_hash, plan["cdam"]["voc21"].config_hash)

    def test_peer_specs_select_the_peer_alone_or_with_cdam(self):
        from cdam_d2.cdam.benchmark_table import method_from_spec, plan_cells

        for peer in ("sclip", "resclip"):
            alone, on_top = method_from_spec(f"peers/{peer}", CONFIGS), method_from_spec(f"peers/{peer}:cdam", CONFIGS)
            folder = os.path.join(CONFIGS, "peers", peer)
            self.assertEqual(alone.configs, tuple((key, os.path.join(folder, f"{key}.yaml")) for key in KEYS))
            self.assertEqual(on_top.configs, tuple((key, os.path.join(folder, f"{key}_cdam.yaml")) for key in KEYS))
            plan = plan_cells([alone, on_top], [], "out")
            self.assertEqual(plan[f"peers/{peer}:cdam"]["voc21"].results_file,
                             os.path.join("out", f"peers-{peer}-cdam", "voc21", "results.json"))
            self.assertNotEqual(plan[f"peers/{peer}"]["voc21"].config_hash,
                                plan[f"peers/{peer}:cdam"]["voc21"].config_hash)

    def test_ambiguous_or_unknown_specs_name_what_exists(self):
        from cdam_d2.cdam.benchmark_table import BenchmarkTableError, method_from_config_dir, method_from_spec

        for method_spec, pattern in (
            ("sclip", r"Unknown method 'sclip'.*did you mean peers/sclip, peers/sclip:cdam or variants:sclip\?"),
            ("peers/sclip_cdam", "peers/sclip_cdam/<dataset>.yaml exists; did you mean .*peers/sclip:cdam"),
            ("clearclip_vanilla", r"did you mean peers/clearclip_vanilla\?$"),
            ("peers/clearclip_vanilla:cdam", "no config file .*clearclip_vanilla/<dataset>_cdam.yaml exists"),
            (os.path.join(CONFIGS, "peers", "sclip"), "is a folder: --config-dir"),
            ("nothing_like_it", "Unknown method 'nothing_like_it': give cdam, .*peers/<peer>:cdam .*--config-dir DIR$"),
        ):
            with self.subTest(method_spec), self.assertRaisesRegex(BenchmarkTableError, pattern):
                method_from_spec(method_spec, CONFIGS)
        # a peers folder holds <dataset>.yaml and <dataset>_cdam.yaml: --config-dir cannot choose
        with self.assertRaisesRegex(BenchmarkTableError, "voc21.yaml, voc21_cdam.yaml.*peers/<peer>:cdam"):
            method_from_config_dir(os.path.join(CONFIGS, "peers", "sc_clip"))

    def test_help_maps_every_row_form_to_its_files(self):
        from cdam_d2.cdam.benchmark_table import SPEC_FILES, method_from_spec, main

        with contextlib.redirect_stdout(io.StringIO()) as out, self.assertRaises(SystemExit):
            main(["--help"], default_configs_root=CONFIGS)
        text = " ".join(out.getvalue().split())
        for form, path, _ in SPEC_FILES:
            self.assertIn(f"--method {form} CONFIGS_ROOT/{path}", text)
        self.assertIn("--config-dir DIR per benchmark, the one file DIR/*<dataset>*.yaml", text)
        self.assertIn("not used by --config-dir", text)
        # each form's path is the one method_from_spec reads
        for form, path, _ in SPEC_FILES:
            method_spec = form.replace("<base>", "sclip").replace("<peer>", "sclip")
            expected = os.path.join(CONFIGS, path.replace("<base>", "sclip").replace("<peer>", "sclip"))
            self.assertEqual(method_from_spec(method_spec, CONFIGS).configs[0][1], expected.replace("<dataset>", "voc21"))

    def test_config_dir_and_explicit_files(self):
        from cdam_d2.cdam.benchmark_table import method_from_config_dir, method_from_spec, plan_cells

        with tempfile.TemporaryDirectory() as tmp:
            directory = os.path.join(tmp, "mine")
            _config(os.path.join(directory, "mine_voc21.yaml"), "cdam_voc21.yaml")
            _config(os.path.join(directory, "mine_ade20k150.yaml"), "cdam_ade20k150.yaml")
            method = method_from_config_dir(directory)
            self.assertEqual(method.name, "mine")
            self.assertEqual([key for key, _ in method.configs], ["voc21", "ade20k150"])
            # Explicit files find their column through DATASETS.TEST[0], whatever their names.
            files = method_from_spec(f"x={CONFIGS}/cdam_voc20.yaml,{CONFIGS}/variants/cdam_context59_gem.yaml", CONFIGS)
            self.assertEqual(list(plan_cells([files], [], tmp)["x"]), ["voc20", "context59"])

    def test_bad_input_gets_an_error_naming_it(self):
        from cdam_d2.cdam.benchmark_table import (BenchmarkTableError, method_from_config_dir, method_from_spec,
                                                    plan_cells)

        with tempfile.TemporaryDirectory() as tmp:
            no_test = _config(os.path.join(tmp, "no_test.yaml"), "Base-CDAM.yaml")
            train = _config(os.path.join(tmp, "train.yaml"), "cdam_voc21.yaml", '("cdam_voc21_sem_seg_train_aug",)')
            misnamed = _config(os.path.join(tmp, "misnamed", "a_voc21.yaml"), "cdam_context60.yaml")
            twice = os.path.join(tmp, "twice")
            _config(os.path.join(twice, "a_voc21.yaml"), "cdam_voc21.yaml")
            _config(os.path.join(twice, "b_voc21.yaml"), "cdam_voc21.yaml")
            for make, pattern in (
                (lambda: method_from_spec("clearclip", CONFIGS), "Unknown method 'clearclip'"),
                (lambda: method_from_spec("variants:nobase", CONFIGS), "cdam_<dataset>_nobase.yaml"),
                (lambda: method_from_spec("peers/nopeer", CONFIGS), "peers/nopeer/<dataset>.yaml"),
                (lambda: method_from_spec("x=missing.yaml", CONFIGS), "'missing.yaml' does not exist"),
                (lambda: method_from_config_dir(twice), "a_voc21.yaml, b_voc21.yaml"),
                (lambda: plan_cells([method_from_spec(f"x={no_test}", CONFIGS)], [], tmp),
                 "no_test.yaml: DATASETS.TEST"),
                (lambda: plan_cells([method_from_spec(f"x={train}", CONFIGS)], [], tmp),
                 "cdam_voc21_sem_seg_train_aug"),
                (lambda: plan_cells([method_from_spec("cdam", CONFIGS)], ["MODEL.CDAM.NO_SUCH_KEY", "1"], tmp),
                 "cdam_voc21.yaml: .*Non-existent key: MODEL.CDAM.NO_SUCH_KEY"),
                (lambda: plan_cells([method_from_spec(f"x={_config(os.path.join(tmp, 'bad.yaml'), 'nosuch.yaml')}",
                                                      CONFIGS)], [], tmp), "bad.yaml: .*nosuch.yaml"),
                (lambda: plan_cells([method_from_config_dir(os.path.dirname(misnamed))], [], tmp),
                 "says voc21, but it evaluates cdam_context60_sem_seg_val"),
                (lambda: plan_cells([method_from_spec("cdam", CONFIGS)] * 2, [], tmp), "'cdam' is given twice"),
                (lambda: plan_cells([method_from_spec(f"x={CONFIGS}/cdam_voc21.yaml,{CONFIGS}/cdam_voc21.yaml",
                                                      CONFIGS)], [], tmp), "both evaluate cdam_voc21_sem_seg_val"),
            ):
                with self.subTest(pattern), self.assertRaisesRegex(BenchmarkTableError, pattern.replace("(", r"\(")):
                    make()

    def test_command_line_reports_bad_input_as_a_usage_error(self):
        from cdam_d2.cdam.benchmark_table import main

        for argv, message in (([], "give at least one --method"),
                              (["--method", "nosuch"], "Unknown method 'nosuch'"),
                              (["--method", "cdam", "--opts", "MODEL.CDAM.ALPHA"], "KEY VALUE pairs")):
            with self.subTest(argv), contextlib.redirect_stderr(io.StringIO()) as err:
                with self.assertRaises(SystemExit) as exit_:
                    main(argv, default_configs_root=CONFIGS)
                self.assertEqual(exit_.exception.code, 2)
                self.assertIn(message, err.getvalue())


@requires_detectron2
class RunTest(unittest.TestCase):
    """Resuming and missing data, with ``cli.main`` replaced by a fake (no model, no data read)."""

    def setUp(self):
        from cdam_d2.cdam.benchmark_table import method_from_spec

        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.out = os.path.join(self.tmp.name, "out")
        self.method = method_from_spec(f"two={CONFIGS}/cdam_voc21.yaml,{CONFIGS}/cdam_context60.yaml", CONFIGS)
        self.calls = []
        self.values = {"cdam_voc21.yaml": 41.25, "cdam_context60.yaml": 30.0}
        # The datasets count as present.
        patcher = mock.patch("cdam_d2.cdam.benchmark_table.missing_reason", return_value=None)
        patcher.start()
        self.addCleanup(patcher.stop)

    def run_table(self, opts=(), main=None):
        from cdam_d2.cdam.benchmark_table import run_table

        with mock.patch("cdam_d2.engine.cli.main", main or _fake_main(self.values, self.calls)):
            return run_table([self.method], opts, self.out, progress=lambda message: None)

    def results_file(self, key):
        return os.path.join(self.out, "two", key, "results.json")

    def test_an_interrupted_run_keeps_its_finished_cells_and_never_reads_a_partial_file(self):
        from cdam_d2.utils.files import temp_path_for

        def interrupted(args):
            if args.config_file.endswith("cdam_context60.yaml"):
                raise KeyboardInterrupt
            return _fake_main(self.values, self.calls)(args)

        with self.assertRaises(KeyboardInterrupt):
            self.run_table(main=interrupted)
        self.assertEqual(json.load(open(self.results_file("voc21")))["mIoU"], 41.25)
        self.assertFalse(os.path.exists(self.results_file("context60")))
        # What a killed writer leaves: a partial temporary file, never taken for the results.
        partial = temp_path_for(self.results_file("context60"))
        _write(partial, '{"mIoU": 30')
        self.calls.clear()
        table = self.run_table()
        self.assertEqual(self.calls, ["cdam_context60.yaml"])
        self.assertEqual(table.rows["two"]["voc21"].miou, 41.25)
        self.assertEqual(table.rows["two"]["context60"].miou, 30.0)
        self.assertFalse(os.path.exists(partial))  # cleared as stale before the evaluation

    def test_damaged_or_mismatching_results_are_recomputed(self):
        self.run_table()
        self.assertEqual(self.calls, ["cdam_voc21.yaml", "cdam_context60.yaml"])
        self.calls.clear()
        self.run_table()
        self.assertEqual(self.calls, [])
        _write(self.results_file("voc21"), '{"mIoU": 41.2')  # damaged
        self.values["cdam_voc21.yaml"] = 12.5
        table = self.run_table()
        self.assertEqual(self.calls, ["cdam_voc21.yaml"])
        self.assertEqual(table.rows["two"]["voc21"].miou, 12.5)
        self.calls.clear()
        self.run_table(opts=["MODEL.CDAM.ALPHA", "1.0"])  # another config: both again
        self.assertEqual(self.calls, ["cdam_voc21.yaml", "cdam_context60.yaml"])
        self.assertEqual(json.load(open(self.results_file("voc21")))["opts"], ["MODEL.CDAM.ALPHA", "1.0"])

    def test_num_gpus_goes_to_the_launcher(self):
        from cdam_d2.engine import cli

        launches = []

        def launch(main_func, num_gpus, dist_url=None, args=()):
            launches.append((num_gpus, dist_url))
            main_func(*args)

        with mock.patch.object(cli, "launch", launch):
            from cdam_d2.cdam.benchmark_table import run_table

            with mock.patch("cdam_d2.engine.cli.main", _fake_main(self.values, self.calls)):
                run_table([self.method], [], self.out, num_gpus=2, progress=lambda message: None)
        self.assertEqual(launches, [(2, "auto"), (2, "auto")])


@requires_detectron2
class MissingDataTest(unittest.TestCase):
    def test_missing_data_and_missing_configs_are_told_apart(self):
        from cdam_d2.data.datasets import default_datasets_root
        from cdam_d2.data.datasets.register import register_all_cdam_datasets
        from cdam_d2.cdam.benchmark_table import method_from_spec, run_table, to_markdown

        with tempfile.TemporaryDirectory() as tmp:
            register_all_cdam_datasets(os.path.join(tmp, "no_datasets"))
            self.addCleanup(register_all_cdam_datasets, default_datasets_root())
            _config(os.path.join(tmp, "configs", "peers", "mypeer", "voc21.yaml"), "cdam_voc21.yaml")
            _config(os.path.join(tmp, "configs", "peers", "mypeer", "context59.yaml"), "cdam_context59.yaml")
            method = method_from_spec("peers/mypeer", os.path.join(tmp, "configs"))
            with mock.patch("cdam_d2.engine.cli.main", side_effect=AssertionError("no evaluation expected")):
                table = run_table([method], [], os.path.join(tmp, "out"), progress=lambda message: None)
        row = table.rows["peers/mypeer"]
        self.assertEqual([row[key].status for key in KEYS],
                         ["missing", "n/a", "n/a", "n/a", "missing", "n/a", "n/a", "n/a"])
        self.assertIn("tools/prepare_voc.py", row["voc21"].reason)
        markdown = to_markdown(table)
        self.assertIn("| peers/mypeer | missing [1] | n/a | n/a | n/a | missing [2] | n/a | n/a | n/a | — |",
                      markdown)
        self.assertIn("[2] Context59: data missing. Dataset 'cdam_context59_sem_seg_val'", markdown)
        self.assertIn("tools/prepare_pascal_context.py", markdown)
        self.assertIn("n/a: the method has no config for this benchmark.", markdown)


@requires_detectron2
class FormatTest(unittest.TestCase):
    def test_markdown_csv_and_json(self):
        from cdam_d2.cdam.benchmark_table import (DONE, MISSING, NOT_AVAILABLE, Outcome, Table, to_csv, to_json,
                                                    to_markdown)

        complete = {key: Outcome(DONE, 10.0 * (index + 1) + 0.04) for index, key in enumerate(KEYS)}
        partial = {key: Outcome(DONE, 20.0) for key in KEYS}
        partial["voc21"] = Outcome(MISSING, reason="no files here")
        partial["context60"] = Outcome(NOT_AVAILABLE)
        table = Table({"complete": complete, "partial": partial})
        lines = to_markdown(table).splitlines()
        self.assertEqual(lines[0], HEADER)
        # VOC21 of "complete" was read from a finished result: no footnote mark, although VOC21 is missing now.
        self.assertEqual(lines[2], "| complete | 10.0 | 20.0 | 30.0 | 40.0 | 50.0 | 60.0 | 70.0 | 80.0 | 45.0 |")
        self.assertEqual(lines[3],
                         "| partial | missing [1] | n/a | 20.0 | 20.0 | 20.0 | 20.0 | 20.0 | 20.0 | — [2] |")
        self.assertEqual(lines[5:], ["[1] VOC21: data missing. no files here",
                                     "[2] partial: 6 of 8 benchmarks; their average is 20.0.",
                                     "n/a: the method has no config for this benchmark."])
        rows = list(csv.reader(io.StringIO(to_csv(table))))
        self.assertEqual(rows[0][1:10], HEADER.strip("| ").split(" | ")[1:])
        self.assertEqual(rows[0][10:], ["Average of present", "Present"])
        self.assertEqual(rows[1][9:], ["45.0", "45.0", "8"])
        self.assertEqual(rows[2][1:3] + rows[2][9:], ["missing", "n/a", "—", "20.0", "6"])
        as_json = to_json(table)
        self.assertAlmostEqual(as_json["rows"][0]["average"], 45.04)
        self.assertIsNone(as_json["rows"][1]["average"])
        self.assertEqual([cell["column"] for cell in as_json["rows"][1]["cells"]], as_json["columns"][:8])
        self.assertEqual(as_json["rows"][1]["cells"][0]["reason"], "no files here")


@slow
@requires_detectron2
class EndToEndTest(unittest.TestCase):
    """Two methods on the toy layouts of the 8 benchmarks, with the tiny random CLIP."""

    def test_two_methods_on_the_toy_benchmarks(self):
        from cdam_d2.data.datasets import default_datasets_root
        from cdam_d2.data.datasets.register import register_all_cdam_datasets
        from cdam_d2.data.toy import make_toy_datasets
        from cdam_d2.engine import cli

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = os.path.join(tmp.name, "datasets")
        make_toy_datasets(root)
        register_all_cdam_datasets(root)
        point_builtin_datasets_at(root)
        self.addCleanup(point_builtin_datasets_at, default_datasets_root())
        self.addCleanup(register_all_cdam_datasets, default_datasets_root())
        templates = _write(os.path.join(tmp.name, "templates.txt"), "a photo of a {}.\n")
        self.opts = ["MODEL.DEVICE", "cpu", "MODEL.CDAM.CLIP_MODEL", "tiny:ViT-B-16", "MODEL.CDAM.CLIP_WEIGHTS",
                     "random", "MODEL.CDAM.TEMPLATES", templates, "MODEL.CDAM.TEXT_CACHE_DIR", "",
                     "MODEL.CDAM.SLIDE_CROP", "64", "MODEL.CDAM.SLIDE_STRIDE", "32", "INPUT.MIN_SIZE_TEST", "96",
                     "DATALOADER.NUM_WORKERS", "0"]
        self.out = os.path.join(tmp.name, "table")
        self.csv_file = os.path.join(tmp.name, "table.csv")

        # 1. Context59's label maps are missing: 14 evaluations, Context59 missing, no full average.
        labels = os.path.join(root, "VOCdevkit", "VOC2010", "SegmentationClassContext59")
        os.rename(labels, labels + ".away")
        start, cpu_start = time.perf_counter(), time.process_time()
        markdown, evaluated = self.run_tool(mock.patch.object(cli, "main", wraps=cli.main))
        first_run, first_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        self.assertEqual(evaluated, 14)
        lines = markdown.splitlines()
        self.assertEqual(lines[0], HEADER)
        self.assertEqual([line.split(" | ")[5] for line in lines[2:4]], ["missing [1]", "missing [1]"])
        self.assertTrue(all(line.endswith(" — [2] |") or line.endswith(" — [3] |") for line in lines[2:4]))
        self.assertIn("tools/prepare_pascal_context.py", markdown)
        self.check_cells_equal_their_results_files(missing={"context59"})

        # 2. Back: only the two Context59 cells are evaluated; the average is over all 8.
        os.rename(labels + ".away", labels)
        second, evaluated = self.run_tool(mock.patch.object(cli, "main", wraps=cli.main))
        self.assertEqual(evaluated, 2)
        table = self.check_cells_equal_their_results_files(missing=set())
        for row in table["rows"]:
            values = [cell["mIoU"] for cell in row["cells"]]
            self.assertAlmostEqual(row["average"], sum(values) / 8)
            self.assertIn(f" | {row['average']:.1f} |", second)

        # 3. Everything finished: nothing is evaluated, the same table comes out.
        third, evaluated = self.run_tool(mock.patch.object(cli, "main", side_effect=AssertionError("evaluated")))
        self.assertEqual((third, evaluated), (second, 0))
        with open(self.csv_file) as f:
            rows = list(csv.reader(f))
        self.assertEqual([row[0] for row in rows[1:]], ["cdam", "variants:sclip_baseline"])
        self.assertEqual(rows[1][1:9], [f"{cell['mIoU']:.1f}" for cell in table["rows"][0]["cells"]])

        # 4. A damaged results file is evaluated again, to the same value.
        voc21 = table["rows"][0]["cells"][0]
        _write(voc21["results_file"], '{"mIoU": ')
        fourth, evaluated = self.run_tool(mock.patch.object(cli, "main", wraps=cli.main))
        self.assertEqual((fourth, evaluated), (second, 1))

        # 5. The cell equals an independent evaluation through the package's entry point.
        args = cli.argument_parser().parse_args(["--config-file", os.path.join(CONFIGS, "cdam_voc21.yaml"),
                                                 "--eval-only"])
        args.opts = self.opts + ["OUTPUT_DIR", os.path.join(tmp.name, "independent")]
        self.assertAlmostEqual(cli.main(args)["sem_seg"]["mIoU"], voc21["mIoU"], places=6)
        print(f"\nbenchmark table on the toy datasets, first run (14 evaluations): {first_run:.1f} s, "
              f"{first_cpu:.1f} s CPU")

    def run_tool(self, main_patch):
        """The tool's stdout and the number of evaluations, with ``cli.main`` patched by ``main_patch``."""
        from cdam_d2.cdam.benchmark_table import main

        stdout = io.StringIO()
        with main_patch as patched, contextlib.redirect_stdout(stdout):
            main(["--method", "cdam", "--method", "variants:sclip_baseline", "--output-dir", self.out,
                  "--csv", self.csv_file, "--opts", *self.opts], default_configs_root=CONFIGS)
        return stdout.getvalue(), patched.call_count

    def check_cells_equal_their_results_files(self, missing):
        """Every present cell of table.json is its results file's mIoU, shown with one decimal in table.md."""
        with open(os.path.join(self.out, "table.json")) as f:
            table = json.load(f)
        with open(os.path.join(self.out, "table.md")) as f:
            lines = f.read().splitlines()
        self.assertEqual([row["method"] for row in table["rows"]], ["cdam", "variants:sclip_baseline"])
        for row, line in zip(table["rows"], lines[2:4]):
            shown = line.split(" | ")[1:9]
            for cell, text in zip(row["cells"], shown):
                with self.subTest(method=row["method"], column=cell["column"]):
                    if cell["benchmark"] in missing:
                        self.assertEqual(cell["status"], "missing")
                        continue
                    with open(cell["results_file"]) as f:
                        record = json.load(f)
                    self.assertEqual(cell["mIoU"], record["mIoU"])
                    self.assertEqual(record["results"]["sem_seg"]["mIoU"], record["mIoU"])
                    self.assertEqual(text, f"{cell['mIoU']:.1f}")
        return table


if __name__ == "__main__":
    unittest.main()
