"""The normalization fixtures graded as assignments/normalization/fixtures/manifest.yaml says.

This is a stand-in for the harness's test kit until the lesson is wired into the grader: a small
in-process grader (the fixtures are ours, so no sandbox) that loads a fixture the way the
harness's loader does (definitions, imports and assignments kept; loops, prints and magics
skipped), draws the cases of assignments/normalization/proposed_groups.yaml, compares with the
reference under the tolerance model, records the aten operators each call ran, and checks every
claim the manifest makes: status, which groups must fail and which must pass, the operators,
input mutation, and that the named mistake reproduces the failing outputs.

    python tests/test_normalization_fixtures.py [--seeds N] [FIXTURE...]   # what each fixture does
"""
import ast
import hashlib
import inspect
import math
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assignments.normalization import tolerance  # noqa: E402
from reference import normalization as ref  # noqa: E402

FOLDER = ROOT / "assignments" / "normalization"
FIXTURES = FOLDER / "fixtures"
PLAN = yaml.safe_load((FOLDER / "proposed_groups.yaml").read_text())
MANIFEST = yaml.safe_load((FIXTURES / "manifest.yaml").read_text())
FORBIDDEN = set(PLAN["forbidden_operators"])
SEEDS = (2026, 7)   # two seeds, so "must fail for any seed" is not one lucky draw
NAMES = {"batch_norm1d": "custom_batch_norm1d", "batch_norm1d_affine": "custom_batch_norm1d",
         "batch_norm1d_module": "CustomBatchNorm1d", "batch_norm2d": "custom_batch_norm2d",
         "layer_norm": "custom_layer_norm", "instance_norm1d": "custom_instance_norm1d",
         "group_norm": "custom_group_norm"}
ARITY = {"batch_norm1d": 2, "batch_norm1d_affine": 4}


# --- loading, as the harness does -----------------------------------------------------------------

def _sources(path):
    """(cell, source) pairs: one for a .py file, one per code cell (IPython syntax translated)."""
    if path.suffix == ".py":
        return [(None, path.read_text())]
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager
    cells = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        source = cell.source
        if source.lstrip().startswith(("%%time", "%%timeit", "%%capture")):
            source = source.lstrip().partition("\n")[2]
        cells.append((index, TransformerManager().transform_cell(source)))
    return cells


def _kept(statement):
    if isinstance(statement, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Pass)):
        return True
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return "get_ipython" not in ast.unparse(statement)
    if isinstance(statement, (ast.If, ast.Try)) and "__name__" not in ast.unparse(getattr(statement, "test", ast.Pass())):
        blocks = [statement.body, statement.orelse] + ([statement.finalbody] + [h.body for h in statement.handlers]
                                                       if isinstance(statement, ast.Try) else [])
        return all(_kept(inner) for block in blocks for inner in block)
    return False


@dataclass
class Loaded:
    namespace: dict
    defs: dict = field(default_factory=dict)     # name -> [function bound by each def, in order]
    errors: list = field(default_factory=list)


def load(path):
    """Runs the kept statements one at a time; remembers what every `def` bound, because the
    course's step 3 check rebinds custom_batch_norm1d to an instance after steps 1 and 2."""
    loaded = Loaded(namespace={"__name__": "submission"})
    for cell, source in _sources(path):
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            loaded.errors.append((cell, exc.lineno, "SyntaxError"))
            continue
        for statement in tree.body:
            if not _kept(statement):
                continue
            try:
                exec(compile(ast.Module([statement], []), f"cell {cell}", "exec"), loaded.namespace)
            except Exception as exc:  # a failing statement is a load note; the rest still loads
                loaded.errors.append((cell, statement.lineno, type(exc).__name__))
                continue
            if isinstance(statement, ast.FunctionDef):
                loaded.defs.setdefault(statement.name, []).append(loaded.namespace[statement.name])
    return loaded


def _arity(function):
    return len([p for p in inspect.signature(function).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


def resolve(loaded, step):
    """(status, callable): steps 1 and 2 take the last `def` of their parameter count."""
    name = NAMES[step]
    if step in ARITY:
        defs = loaded.defs.get(name, [])
        matching = [f for f in defs if _arity(f) == ARITY[step]]
        if matching:
            return "graded", matching[-1]
        return ("other_form", None) if defs else ("missing", None)
    found = loaded.namespace.get(name)
    if found is None or (step == "batch_norm1d_module" and not inspect.isclass(found)):
        return "missing", None
    return "graded", found


# --- cases, from proposed_groups.yaml -----------------------------------------------------------

def _number(text):
    return float(text) if re.search(r"[.eE]", str(text)) else int(text)


def draw(spec, rng):
    """One value of a spec: a value, "LOW..HIGH" (int, float or " log"), or a list (one entry)."""
    if isinstance(spec, list):
        return draw(rng.choice(spec), rng)
    if isinstance(spec, str) and ".." in spec:
        log = spec.endswith(" log")
        low, high = (_number(v) for v in spec.removesuffix(" log").split(".."))
        if log:
            return 10 ** rng.uniform(math.log10(low), math.log10(high))
        if isinstance(low, int) and isinstance(high, int):
            return rng.randint(low, high)
        return rng.uniform(low, high)
    if isinstance(spec, str):
        try:
            return _number(spec)
        except ValueError:
            return spec
    return spec


def _per_reduction(spec, size, rng):
    """A tensor of `size` drawn from spec per element (a random sign for mean ratios)."""
    values = torch.tensor([float(draw(spec, rng)) for _ in range(math.prod(size))], dtype=torch.float64)
    return values.reshape(size)


@dataclass
class Case:
    step: str
    group: str
    index: int
    params: dict
    inputs: dict     # x (or train/evals), weight, bias


def _params(step, group, index, seed):
    spec = dict(PLAN["defaults"])
    spec.update(PLAN["steps"][step].get("params", {}))
    group_spec = PLAN["steps"][step]["groups"][group]
    spec.update(group_spec.get("params", {}))
    rng = random.Random(f"{seed}/{step}/{group}/{index}")
    while True:
        params = {key: (value[index % len(value)] if key == "layout" and isinstance(value, list)
                        else draw(value, rng)) for key, value in spec.items()}
        if _allowed(step, params, PLAN["steps"][step].get("require", [])):
            return params, rng


def _allowed(step, p, require):
    if step == "group_norm":
        if p["groups"] == "all":
            p["per_group"] = 1
            p["groups"] = int(draw(PLAN["steps"][step]["params"]["groups"], random.Random(p["length"])))
        if "distinct_group_size" in require and p["per_group"] == p["groups"] and p["per_group"] > 1:
            return False
        return p["batch"] * p["per_group"] * p["length"] > 1      # torch raises otherwise
    if step == "batch_norm2d":
        return p["batch"] * p["height"] * p["width"] > 1
    return True


def _shape(step, p, rng):
    if step in ("batch_norm1d", "batch_norm1d_affine"):
        return (p["batch"], p["features"])
    if step == "batch_norm2d":
        return (p["batch"], p["channels"], p["height"], p["width"])
    if step == "instance_norm1d":
        return (p["batch"], p["channels"], p["length"])
    return (p["batch"], p["groups"] * p["per_group"], p["length"])


def _values(step, shape, p, rng, gen, groups=None):
    """Values whose every reduction (the step's correct layout) has exactly the drawn std and
    mean ratio: standardized normals, scaled and shifted per reduction."""
    view, dims = ref.layout(step, shape, groups)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    v = z if view is None else z.reshape(view)
    mean, var, _ = ref.moments(v, None, dims)
    v = torch.where(var > 0, (v - mean) / var.sqrt().clamp_min(1e-300), 0.0)
    size = mean.shape
    eps = p["eps"]
    base = (math.sqrt(eps) * 10 ** rng.uniform(-0.5, 0.5)) if p["std"] == "matched" else p["std"]
    std = base * 2.0 ** (torch.rand(size, generator=gen, dtype=torch.float64) * 2 - 1)
    ratio = _per_reduction(p["mean_ratio_spec"], size, rng)
    sign = torch.where(torch.rand(size, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return ((sign * ratio + v) * std).reshape(shape)


def _layout(x, kind):
    """The same values in the given memory layout (see proposed_groups.yaml)."""
    if kind == "transposed" and x.dim() >= 2:
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    if kind == "strided":
        return torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]
    if kind == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


COURSE_SEED = 0


def _course_case(step, index):
    """The course's own check inputs (its checks draw randn; a fixed seed stands in)."""
    gen = torch.Generator().manual_seed(COURSE_SEED + index)
    f32 = torch.float32
    if step == "batch_norm1d":
        x = torch.tensor([[0.0, 0, 1, 0, 2], [0, 1, 1, 0, 10]])
        return {"eps": 10.0 ** -index, "dtype": "float32"}, {"x": x}
    if step == "batch_norm1d_affine":
        return ({"eps": 1e-3, "dtype": "float32"},
                {"x": torch.randn(5, 7, generator=gen), "weight": torch.randn(7, generator=gen),
                 "bias": torch.randn(7, generator=gen)})
    if step == "batch_norm1d_module":
        return ({"eps": 0.1, "momentum": 0.5, "dtype": "float32"},
                {"weight": torch.randn(3, generator=gen), "bias": torch.randn(3, generator=gen),
                 "train": [torch.randn(5, 3, generator=gen) for _ in range(8)],
                 "evals": [torch.randn(5, 3, generator=gen) for _ in range(8)]})
    if step == "batch_norm2d":
        return {"eps": 1e-3, "dtype": "float32"}, {"x": torch.randn(3, 3, 10, 10, generator=gen, dtype=f32)}
    if step == "layer_norm":
        return {"eps": 1e-10, "dtype": "float32"}, {"x": torch.randn(*range(3, index + 5), generator=gen)}
    if step == "instance_norm1d":
        return {"eps": 1e-3, "dtype": "float32"}, {"x": torch.randn(5, 2, 30, generator=gen)}
    return ({"eps": 1e-3, "groups": [1, 2, 3, 6][index], "dtype": "float32"},
            {"x": torch.randn(20, 6, 2, generator=torch.Generator().manual_seed(COURSE_SEED))})


def make_case(step, group, index, seed):
    if PLAN["steps"][step]["groups"][group].get("inputs") == "course":
        params, inputs = _course_case(step, index)
        return Case(step, group, index, params, inputs)
    params, rng = _params(step, group, index, seed)
    spec = dict(PLAN["defaults"])
    spec.update(PLAN["steps"][step].get("params", {}))
    spec.update(PLAN["steps"][step]["groups"][group].get("params", {}))
    params["mean_ratio_spec"] = spec["mean_ratio"]
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    dtype = getattr(torch, params["dtype"])
    if step == "batch_norm1d_module":
        inputs = _module_inputs(params, spec, rng, gen)
        inputs = {k: ([_layout(x, params["layout"]).to(dtype) for x in v] if isinstance(v, list) else v.to(dtype))
                  for k, v in inputs.items()}
        return Case(step, group, index, params, inputs)
    if step == "layer_norm":
        shape = (params["batch"], *[int(draw(spec["size"], rng)) for _ in range(params["rank"] - 1)])
    else:
        shape = _shape(step, params, rng)
    x = _values(step, shape, params, rng, gen, params.get("groups"))
    inputs = {"x": _layout(x.to(dtype), params["layout"])}
    if step == "batch_norm1d_affine":
        inputs["weight"] = (torch.randn(shape[1], generator=gen, dtype=torch.float64) * 1.5).to(dtype)
        inputs["bias"] = torch.randn(shape[1], generator=gen, dtype=torch.float64).to(dtype)
    return Case(step, group, index, params, inputs)


def _module_inputs(p, spec, rng, gen):
    """Batches that differ from one another in mean and spread (so running and batch statistics
    differ), each with an exact per-feature mean ratio as the ordinary groups promise."""
    features = p["features"]

    def batch(rows):
        p_rows = dict(p, batch=rows, features=features)
        return _values("batch_norm1d", (rows, features), p_rows, rng, gen)

    train = [batch(int(draw(spec["train_batch"], rng))) for _ in range(p["train_calls"])]
    sizes = [int(draw(spec["eval_batch"], rng)) for _ in range(p["eval_calls"])]
    if "first_eval_batch" in p:
        sizes[0] = p["first_eval_batch"]
    return {"weight": torch.randn(features, generator=gen, dtype=torch.float64) * 1.5,
            "bias": torch.randn(features, generator=gen, dtype=torch.float64),
            "train": train, "evals": [batch(n) for n in sizes]}


def cases(step, seed):
    for group, spec in PLAN["steps"][step]["groups"].items():
        for index in range(spec["count"]):
            yield make_case(step, group, index, seed)


# --- running a case --------------------------------------------------------------------------------

class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.name().split("::")[-1].split(".")[0])
        return func(*args, **(kwargs or {}))


def _digest(tensors):
    return hashlib.sha256(b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors)).hexdigest()


@dataclass
class Outcome:
    passed: bool
    error: str | None = None
    mutated: bool = False
    ops: set = field(default_factory=set)
    outputs: list = field(default_factory=list)
    worst: float = 0.0


def _compare(actual, expected, bound, dtype):
    if not isinstance(actual, torch.Tensor):
        return math.inf, f"returned {type(actual).__name__}"
    if actual.shape != expected.shape:
        return math.inf, f"shape {list(actual.shape)}, expected {list(expected.shape)}"
    if actual.dtype != dtype:
        return math.inf, f"dtype {actual.dtype}, expected {dtype}"
    err = (actual.detach().to(torch.float64) - expected).abs()
    if not torch.isfinite(err).all():
        return math.inf, "non-finite output"
    return (err / bound).max().item() if err.numel() else 0.0, None


def _copy(x, kind):
    # clone() makes a strided tensor contiguous; the student must get the case's layout.
    return _layout(x.detach().clone().contiguous(), kind)


def run_case(case, target):
    p = case.params
    dtype = getattr(torch, p["dtype"])
    expected, bounds = expected_outputs(case)     # before the call, as the grader's parent does
    kind = p.get("layout", "contiguous")
    inputs = {k: ([_copy(x, kind) for x in v] if isinstance(v, list) else
                  _copy(v, kind if k == "x" else "contiguous")) for k, v in case.inputs.items()}
    tensors = [t for v in inputs.values() for t in (v if isinstance(v, list) else [v])]
    before = _digest(tensors)
    recorder = Recorder()
    outcome = Outcome(passed=False)
    try:
        with recorder:
            if case.step == "batch_norm1d_module":
                module = target(inputs["weight"], inputs["bias"], p["eps"], p["momentum"])
                outputs = [module(x) for x in inputs["train"]]
                module.eval()
                outputs += [module(x) for x in inputs["evals"]]
            else:
                outputs = [target(*_arguments(case, inputs))]
    except Exception as exc:  # a student's error is an outcome, not a test failure
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
        outcome.ops = recorder.ops
        outcome.mutated = _digest(tensors) != before
        return outcome
    outcome.ops, outcome.outputs = recorder.ops, outputs
    outcome.mutated = _digest(tensors) != before
    worst, message = 0.0, None
    for actual, want, bound in zip(outputs, expected, bounds):
        ratio, why = _compare(actual, want, bound, dtype)
        if ratio > worst:
            worst, message = ratio, why
    outcome.worst = worst
    outcome.error = message
    outcome.passed = worst <= 1 and not outcome.mutated
    return outcome


def _arguments(case, i):
    p = case.params
    if case.step == "batch_norm1d_affine":
        return i["x"], i["weight"], i["bias"], p["eps"]
    if case.step == "group_norm":
        return i["x"], p["groups"], p["eps"]
    return i["x"], p["eps"]


def reference_outputs(case, recipe=ref.CORRECT, dtype=torch.float64):
    p, i = case.params, case.inputs
    if case.step == "batch_norm1d_module":
        module = ref.CustomBatchNorm1d(i["weight"].to(dtype), i["bias"].to(dtype), p["eps"], p["momentum"], recipe=recipe)
        outputs = [module(x.to(dtype)) for x in i["train"]]
        module.eval()
        return outputs + [module(x.to(dtype)) for x in i["evals"]]
    x = i["x"].to(dtype)
    eps = p["eps"]
    functions = {
        "batch_norm1d": lambda: ref.custom_batch_norm1d(x, eps, recipe=recipe),
        "batch_norm1d_affine": lambda: ref.custom_batch_norm1d_affine(x, i["weight"].to(dtype), i["bias"].to(dtype), eps, recipe=recipe),
        "batch_norm2d": lambda: ref.custom_batch_norm2d(x, eps, recipe=recipe),
        "layer_norm": lambda: ref.custom_layer_norm(x, eps, recipe=recipe),
        "instance_norm1d": lambda: ref.custom_instance_norm1d(x, eps, recipe=recipe),
        "group_norm": lambda: ref.custom_group_norm(x, p["groups"], eps, recipe=recipe),
    }
    return [functions[case.step]()]


def expected_outputs(case):
    p, i = case.params, case.inputs
    dtype = getattr(torch, p["dtype"])
    expected = reference_outputs(case)
    cancellation = PLAN["steps"][case.step]["groups"][case.group].get("tolerance") != "stable"
    if case.step == "batch_norm1d_module":
        bounds = tolerance.module_bounds(i["weight"], i["bias"], p["eps"], p["momentum"], i["train"], i["evals"],
                                         dtype=dtype, cancellation=cancellation)
    else:
        bounds = [tolerance.function_bound(case.step, i["x"], p["eps"], dtype=dtype, groups=p.get("groups"),
                                           weight=i.get("weight"), bias=i.get("bias"), cancellation=cancellation)]
    return expected, bounds


def reproduces(case, outcome, mistake):
    """The mistake's own output (in the case's dtype) within the bound of the student's."""
    if not outcome.outputs:
        return False
    p = case.params
    dtype = getattr(torch, p["dtype"])
    try:
        wrong = reference_outputs(case, mistake.recipe, dtype)
    except Exception:
        return False
    _, bounds = expected_outputs(case)
    for actual, want, bound in zip(outcome.outputs, wrong, bounds):
        if actual.shape != want.shape:
            return False
        diff = (actual.to(torch.float64) - want.to(torch.float64)).abs()
        both_nan = actual.isnan() & want.isnan()
        if not bool(((diff <= 4 * bound) | both_nan).all()):
            return False
    return True


# --- grading a fixture --------------------------------------------------------------------------

@dataclass
class StepResult:
    status: str
    failed_groups: set = field(default_factory=set)
    passed_groups: set = field(default_factory=set)
    ops: set = field(default_factory=set)
    mutated: bool = False
    failures: list = field(default_factory=list)   # (case, outcome)


_LOADED = {}


def grade(name, step, seed):
    """Grades one step of a fixture (a name in fixtures/, or a path) over every group's cases."""
    path = FIXTURES / name if isinstance(name, str) else name
    if path not in _LOADED:
        torch.manual_seed(0)
        _LOADED[path] = load(path)
    status, target = resolve(_LOADED[path], step)
    result = StepResult(status)
    if status != "graded":
        return result
    for case in cases(step, seed):
        torch.manual_seed(case.index)
        outcome = run_case(case, target)
        result.ops |= outcome.ops
        result.mutated |= outcome.mutated
        if outcome.passed:
            result.passed_groups.add(case.group)
        else:
            result.failed_groups.add(case.group)
            result.failures.append((case, outcome))
    return result


def _expectations():
    for fixture, entry in sorted(MANIFEST["fixtures"].items()):
        for step, expected in entry["steps"].items():
            yield fixture, step, expected


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fixture,step,expected", list(_expectations()),
                         ids=[f"{f}-{s}" for f, s, _ in _expectations()])
def test_fixture_step_grades_as_the_manifest_says(fixture, step, expected, seed):
    result = grade(fixture, step, seed)
    assert result.status == expected["status"]
    if result.status != "graded":
        return
    groups = set(PLAN["steps"][step]["groups"])
    must_fail = set(expected.get("fail_groups", []))
    may_fail = set(expected.get("maybe_fail_groups", []))
    assert must_fail | may_fail <= groups, "the manifest names a group the plan does not have"
    assert must_fail <= result.failed_groups, f"should fail: {sorted(must_fail - result.failed_groups)}"
    unexpected = result.failed_groups - must_fail - may_fail
    details = [f"{c.group}-{c.index}: {o.error} worst {o.worst:.3g}" for c, o in result.failures if c.group in unexpected]
    assert not unexpected, details[:5]
    if expected.get("all_pass"):
        assert not must_fail and not may_fail and not result.failed_groups

    ran_forbidden = result.ops & FORBIDDEN
    assert ran_forbidden == set(expected.get("violations", [])), sorted(ran_forbidden)
    assert result.mutated == bool(expected.get("mutates_input", False))

    if "mistake" in expected:
        mistake = next(m for m in ref.mistakes(step) if m.name == expected["mistake"])
        assert mistake.cause == expected["cause"]
        # Every failure the mistake explains is reproduced by its variant; the other failures
        # are in groups the manifest lists as failing for another reason (`other_failures`).
        unexplained = [(c.group, c.index) for c, o in result.failures
                       if not reproduces(c, o, mistake) and c.group not in expected.get("other_failures", [])]
        assert not unexplained, unexplained[:5]


def test_forbidden_list_covers_torch_registry():
    # Every aten operator of the four families in this torch, so a new one is noticed.
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("aten::")}
    family = {n for n in names if re.search(r"(batch|layer|group|instance)_norm", n)}
    assert family <= FORBIDDEN, sorted(family - FORBIDDEN)
    assert FORBIDDEN <= names, sorted(FORBIDDEN - names)


def test_every_fixture_is_in_the_manifest_and_every_step_is_listed():
    files = {p.name for p in FIXTURES.iterdir() if p.suffix in (".py", ".ipynb")}
    assert files == set(MANIFEST["fixtures"])
    for name, entry in MANIFEST["fixtures"].items():
        assert set(entry["steps"]) == set(ref.STEPS), name


@pytest.mark.parametrize("step", ref.STEPS)
def test_example_submission_passes_every_case(step):
    result = grade(FOLDER / "example" / "submission.ipynb", step, SEEDS[0])
    assert result.status == "graded"
    assert not result.failed_groups, [(c.group, c.index, o.error) for c, o in result.failures[:5]]
    assert not result.ops & FORBIDDEN and not result.mutated


@pytest.mark.parametrize("step", ref.STEPS)
def test_handout_stubs_are_found_and_fail_every_group(step):
    # The stubs return Ellipsis: found under the right names, wrong everywhere.
    result = grade(FOLDER / "handout.ipynb", step, SEEDS[0])
    assert result.status == "graded"
    assert not result.passed_groups and result.failed_groups == set(PLAN["steps"][step]["groups"])


def _describe(names, seeds=SEEDS + tuple(range(1, 5))):
    """What each fixture does, over several seeds: the groups that fail for every seed, those
    that fail for some, the forbidden operators it ran, and which mistakes explain failures."""
    for name in names:
        print(f"== {name}")
        for step in ref.STEPS:
            results = [grade(name, step, seed) for seed in seeds]
            if results[0].status != "graded":
                print(f"  {step}: {results[0].status}")
                continue
            always = set.intersection(*(r.failed_groups for r in results))
            some = set.union(*(r.failed_groups for r in results)) - always
            ops = set.union(*(r.ops for r in results)) & FORBIDDEN
            mutated = any(r.mutated for r in results)
            print(f"  {step}: always {sorted(always)} sometimes {sorted(some)} ops {sorted(ops)}"
                  f"{' MUTATES' if mutated else ''}")
            explained = {}
            for case, outcome in [f for r in results for f in r.failures]:
                hits = tuple(m.name for m in ref.mistakes(step) if reproduces(case, outcome, m))
                explained.setdefault(hits, []).append(f"{case.group}-{case.index}")
            for hits, where in explained.items():
                print(f"      {list(hits)}: {len(where)} cases, e.g. {where[:4]}")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    seeds = SEEDS + tuple(range(1, 5))
    if arguments[:1] == ["--seeds"]:
        seeds, arguments = tuple(range(int(arguments[1]))), arguments[2:]
    _describe(arguments or sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".py", ".ipynb")), seeds)
