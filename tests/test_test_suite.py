"""Rules of the test suite itself, read from the source of the test modules (an AST scan, no test is run):
every test that starts a process carries the ``slow`` marker, so that ``pytest -m "not slow"`` is the quick
run; and every subprocess gets its environment from ``tests.helpers.subprocess_env``, so that it imports
cdam_d2 from this checkout.

A test starts a process when its body, its class's set-up, or a function they call (in its module, in
``tests/helpers.py`` or in another test module it imports from) calls ``subprocess.run`` / ``Popen`` /
``call`` / ``check_call`` / ``check_output``, ``launch``, ``multiprocessing`` pools, processes or contexts,
``CRFWorkerPool``, or passes ``workers=N`` / ``"--workers", "N"`` with N >= 2. Processes started inside the
package because of a config value (Detectron2's DataLoader workers, the CRF workers of an evaluation) are not
visible to the scan: such tests are marked by hand.
"""
import ast
import os
import unittest

from tests.helpers import REPO

TESTS = os.path.join(REPO, "tests")
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
PROCESS_CLASSES = {"Pool", "Process"}  # on multiprocessing, a multiprocessing context, torch.multiprocessing
STARTERS = {"launch", "CRFWorkerPool"}
SET_UP = {"setUp", "setUpClass", "setup_method", "setup_class"}


def called_name(call):
    """('subprocess', 'run') for ``subprocess.run(...)``, (None, 'launch') for ``launch(...)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        return owner, func.attr
    return None, None


def several_workers(node):
    """``workers=N`` or ``"--workers", "N"`` with N >= 2 in a call or a list of arguments."""
    if isinstance(node, ast.Call):
        for keyword in node.keywords:
            value = keyword.value
            if keyword.arg == "workers" and isinstance(value, ast.Constant) and isinstance(value.value, int):
                return value.value >= 2
    if isinstance(node, (ast.List, ast.Tuple)):
        items = node.elts
        for flag, value in zip(items, items[1:]):
            if (isinstance(flag, ast.Constant) and flag.value == "--workers" and isinstance(value, ast.Constant)
                    and str(value.value).isdigit()):
                return int(value.value) >= 2
    return False


def starts_a_process_directly(node):
    """Whether ``node`` (a call or an argument list) starts a process by itself."""
    if several_workers(node):
        return True
    if not isinstance(node, ast.Call):
        return False
    owner, name = called_name(node)
    if owner == "subprocess" and name in SUBPROCESS_CALLS:
        return True
    if name in PROCESS_CLASSES or (owner == "multiprocessing" and name == "get_context"):
        return True
    return name in STARTERS


def is_slow(decorators):
    for decorator in decorators:
        if isinstance(decorator, ast.Name) and decorator.id == "slow":
            return True
        if isinstance(decorator, ast.Attribute) and decorator.attr == "slow":  # pytest.mark.slow
            return True
    return False


class Module:
    """The functions, classes and ``from tests... import`` names of one module of the suite."""

    def __init__(self, name, source):
        self.name = name
        self.tree = ast.parse(source)
        self.functions, self.classes, self.imports = {}, {}, {}
        self.marked = False  # pytestmark = slow
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
                values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
                self.marked = is_slow(values)

    def is_test_case(self, class_name, seen=()):
        """Whether a class of this module derives from ``unittest.TestCase``."""
        node = self.classes.get(class_name)
        if node is None or class_name in seen:
            return False
        return any(ast.unparse(base).endswith("TestCase") or
                   (isinstance(base, ast.Name) and self.is_test_case(base.id, (*seen, class_name)))
                   for base in node.bases)

    def methods(self, class_name, seen=()):
        """Methods of a class of this module, with those of its bases defined in this module."""
        node = self.classes.get(class_name)
        if node is None or class_name in seen:
            return {}
        found = {}
        for base in node.bases:
            if isinstance(base, ast.Name):
                found.update(self.methods(base.id, (*seen, class_name)))
        found.update({f.name: f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))})
        return found


class Suite:
    """Every module under tests/, and which of their functions start a process (directly or by a call)."""

    def __init__(self, sources):
        self.modules = {name: Module(name, source) for name, source in sources.items()}
        self._memo = {}

    @classmethod
    def from_folder(cls, folder=TESTS):
        sources = {}
        for root, _, names in os.walk(folder):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    module = os.path.relpath(path, REPO)[:-len(".py")].replace(os.sep, ".")
                    with open(path) as f:
                        sources[module] = f.read()
        return cls(sources)

    def resolve(self, module, class_name, call):
        """The (module, class, function node) that ``call`` runs, where the scan can tell."""
        owner, name = called_name(call)
        if owner in ("self", "cls") and class_name is not None:
            method = module.methods(class_name).get(name)
            return (module, class_name, method) if method is not None else None
        if owner is None and name in module.functions:
            return module, None, module.functions[name]
        if owner is None and name in module.imports:
            source_module, source_name = module.imports[name]
            other = self.modules.get(source_module)
            if other is not None and source_name in other.functions:
                return other, None, other.functions[source_name]
        return None

    def starts_a_process(self, module, class_name, function):
        key = (module.name, class_name, function.name, function.lineno)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = False  # a recursive call adds nothing
        found = False
        for node in ast.walk(function):
            if starts_a_process_directly(node):
                found = True
            elif isinstance(node, ast.Call):
                target = self.resolve(module, class_name, node)
                found = target is not None and self.starts_a_process(*target)
            if found:
                break
        self._memo[key] = found
        return found

    def tests(self):
        """(module, class name or None, test function, marked slow) of every test of the test modules."""
        for module in self.modules.values():
            if not module.name.rsplit(".", 1)[-1].startswith("test_"):
                continue
            for function in module.functions.values():
                if function.name.startswith("test"):
                    yield module, None, function, module.marked or is_slow(function.decorator_list)
            for class_name, node in module.classes.items():
                if not (class_name.startswith("Test") or module.is_test_case(class_name)):
                    continue
                class_marked = module.marked or is_slow(node.decorator_list)
                for name, method in module.methods(class_name).items():
                    if name.startswith("test"):
                        yield module, class_name, method, class_marked or is_slow(method.decorator_list)

    def set_up_starts_a_process(self, module, class_name):
        return any(self.starts_a_process(module, class_name, method)
                   for name, method in module.methods(class_name).items() if name in SET_UP)

    def unmarked_process_starts(self):
        """``module::Class::test`` of every test that starts a process without the ``slow`` marker."""
        found = []
        for module, class_name, function, marked in self.tests():
            if marked:
                continue
            starts = self.starts_a_process(module, class_name, function)
            if class_name is not None:
                starts = starts or self.set_up_starts_a_process(module, class_name)
            if starts:
                found.append("::".join(p for p in (module.name, class_name, function.name) if p))
        return found

    def subprocess_calls_without_env(self):
        """``module:line`` of every subprocess call without an ``env`` keyword."""
        found = []
        for module in self.modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and called_name(node) in {("subprocess", n) for n in SUBPROCESS_CALLS}:
                    if not any(keyword.arg == "env" for keyword in node.keywords):
                        found.append(f"{module.name}:{node.lineno}")
        return found

    def copies_of_os_environ(self):
        """``module:line`` of every ``dict(os.environ, ...)`` and ``os.environ.copy()``."""
        found = []
        for module in self.modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and (
                        (ast.unparse(node.func) == "dict" and node.args and ast.unparse(node.args[0]) == "os.environ")
                        or ast.unparse(node.func) == "os.environ.copy"):
                    found.append(f"{module.name}:{node.lineno}")
        return found


EXAMPLE_HELPERS = '''
import subprocess


def run_script(args, env):
    return subprocess.run(args, env=env)
'''

EXAMPLE_TESTS = '''
import os
import subprocess
import unittest

from tests.example_helpers import run_script
from tests.helpers import slow


def start(args):
    return subprocess.Popen(args)


class Spawner:
    def spawn(self):
        start(["true"])


class TestExample(Spawner, unittest.TestCase):
    def test_direct(self):
        subprocess.run(["true"], env=dict(os.environ))

    @slow
    def test_marked(self):
        subprocess.run(["true"])

    def test_through_a_module_function(self):
        start(["true"])

    def test_through_a_mixin_method(self):
        self.spawn()

    def test_through_a_helper_module(self):
        run_script(["true"], {})

    def test_pool(self):
        parallel_map(str, [1, 2, 3], workers=2)

    def test_tool_with_workers(self):
        main(["--workers", "2", "root"])

    def test_quick(self):
        parallel_map(str, [1, 2, 3], workers=1)
        main(["--workers", "1", "root"])


class TestSetUpStartsProcesses(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        launch(print, 2)

    def test_anything(self):
        pass


@slow
class TestMarkedClass(unittest.TestCase):
    def test_launch(self):
        launch(print, 2)
'''


class SuiteRulesTest(unittest.TestCase):
    def test_the_scan_finds_each_kind_of_process_start(self):
        suite = Suite({"tests.test_example": EXAMPLE_TESTS, "tests.example_helpers": EXAMPLE_HELPERS})
        self.assertEqual(sorted(suite.unmarked_process_starts()), sorted(
            f"tests.test_example::{test}" for test in (
                "TestExample::test_direct", "TestExample::test_through_a_module_function",
                "TestExample::test_through_a_mixin_method", "TestExample::test_through_a_helper_module",
                "TestExample::test_pool", "TestExample::test_tool_with_workers",
                "TestSetUpStartsProcesses::test_anything")))
        self.assertEqual(suite.subprocess_calls_without_env(), ["tests.test_example:11", "tests.test_example:25"])
        self.assertEqual(suite.copies_of_os_environ(), ["tests.test_example:21"])

    def test_every_test_that_starts_a_process_is_marked_slow(self):
        suite = Suite.from_folder()
        self.assertGreater(len(list(suite.tests())), 300)  # the scan sees the suite
        unmarked = suite.unmarked_process_starts()
        self.assertEqual(unmarked, [], "these tests start a process: mark them @slow (from tests.helpers)")

    def test_every_subprocess_gets_subprocess_env(self):
        suite = Suite.from_folder()
        self.assertEqual(suite.subprocess_calls_without_env(), [],
                         "pass env=subprocess_env(...) (from tests.helpers) to every subprocess")
        self.assertEqual([place for place in suite.copies_of_os_environ() if not place.startswith("tests.helpers:")],
                         [], "build the environment of a subprocess with subprocess_env (from tests.helpers)")


if __name__ == "__main__":
    unittest.main()
