#!/usr/bin/env bash
# Acceptance check of the students' distribution, end to end, as a student gets it:
#   1. build the student wheel (`grade bundle --student`);
#   2. install it in a fresh virtual environment (no system site-packages) next to
#      torch==2.13.0, pyyaml, nbformat and ipython;
#   3. outside the repository: `import reference` fails, `grade check` passes the example
#      notebook (exit 0) and fails the template-bug fixture (exit 1), `check()` works from a
#      script (no subreaper), and, when the grader is root, `grade check` as `nobody` runs with
#      the root-only protections off and says so.
# Usage: scripts/student_acceptance.sh   (PYTHON=... picks the interpreter for the venv,
# KEEP=1 keeps the temporary folder). Exits non-zero at the first failed check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GRADER_PYTHON="${GRADER_PYTHON:-python}"
# A Python outside /root (pyenv lives there, mode 0700) lets the nobody step run too.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null; then
        PYTHON=/usr/bin/python3
    else
        PYTHON="$GRADER_PYTHON"
    fi
fi
WORK="$(mktemp -d /tmp/student-acceptance.XXXXXX)"
chmod 755 "$WORK"
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/studentenv"
ok() { printf 'ok   %-58s %5ss\n' "$1" "$2"; }
fail() { printf 'FAIL %s\n' "$1"; exit 1; }
elapsed() { echo $(( $(date +%s) - $1 )); }

INSTRUCTOR_SEED="$(cd "$ROOT" && "$GRADER_PYTHON" -c \
    'from grader.config import load_assignment; print(load_assignment("conv2d").seed)')"
export INSTRUCTOR_SEED
t=$(date +%s)
(cd "$ROOT" && "$GRADER_PYTHON" -m grader bundle --student -o "$WORK/dist" >/dev/null)
WHEEL="$(ls "$WORK"/dist/*.whl)"
ok "bundle: $(basename "$WHEEL")" "$(elapsed "$t")"

t=$(date +%s)
"$PYTHON" -m venv "$VENV"
grep -q "include-system-site-packages = false" "$VENV/pyvenv.cfg" || fail "the venv sees system site-packages"
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 pyyaml nbformat ipython \
    >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fail "pip install torch pyyaml nbformat ipython"; }
"$VENV/bin/pip" install -q --disable-pip-version-check "$WHEEL" >"$WORK/pip.log" 2>&1 \
    || { cat "$WORK/pip.log"; fail "pip install $WHEEL"; }
ok "fresh venv ($("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')) + torch + wheel" "$(elapsed "$t")"

# Everything below runs from a folder outside the repository, on copies of the submissions.
cp "$ROOT/assignments/conv2d/example/submission.ipynb" "$WORK/example.ipynb"
cp "$ROOT/assignments/conv2d/fixtures/template_bug.ipynb" "$WORK/template_bug.ipynb"
cp "$ROOT/assignments/conv2d/fixtures/correct_module.py" "$WORK/mine.py"
chmod 644 "$WORK"/*.ipynb "$WORK/mine.py"
cd "$WORK"
export PYTHONWARNINGS=ignore  # torch warns that numpy is missing; the grader does not need it

if "$VENV/bin/python" -c "import reference" 2>/dev/null; then fail "import reference works"; fi
"$VENV/bin/python" - <<'EOF' || fail "the installed package is not the student one"
import os, pathlib, grader, yaml
site = pathlib.Path(grader.__file__).parent.parent
assert "site-packages" in str(site), site
assert not (site / "reference").exists()
config = yaml.safe_load((site / "assignments" / "conv2d" / "assignment.yaml").read_text())
assert not any(g.get("hidden") for g in config["groups"].values()), config["groups"]
assert config["seed"] != int(os.environ["INSTRUCTOR_SEED"]), config["seed"]
EOF
ok "no reference package, public config only" 0

t=$(date +%s)
out="$("$VENV/bin/grade" check example.ipynb --device cpu)" || fail "grade check example.ipynb: exit $?"$'\n'"$out"
grep -q "every class passes all its public cases" <<<"$out" || fail "no verdict line: $out"
ok "grade check example.ipynb -> exit 0" "$(elapsed "$t")"
echo "$out" | sed 's/^/     | /'

t=$(date +%s)
set +e; "$VENV/bin/grade" check template_bug.ipynb --device cpu --quiet; code=$?; set -e
[[ $code == 1 ]] || fail "grade check template_bug.ipynb: exit $code, expected 1"
ok "grade check template_bug.ipynb -> exit 1" "$(elapsed "$t")"

t=$(date +%s)
cat >> mine.py <<'EOF'

if __name__ == "__main__":
    from grader import check, reaper
    result = check(Conv2dLoop, device="cpu")
    assert result.passed and not reaper.is_subreaper(), result
    assert "reaps_orphans" in str(result), result
    print("check() in a script: passed")
EOF
"$VENV/bin/python" mine.py | grep -q "check() in a script: passed" || fail "check() from a script"
ok "check(Conv2dLoop) in a script, no subreaper" "$(elapsed "$t")"

if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
    if setpriv --reuid=nobody --regid=nogroup --clear-groups "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        t=$(date +%s)
        mkdir -p "$WORK/home" && chmod 777 "$WORK/home"
        out="$(HOME="$WORK/home" setpriv --reuid=nobody --regid=nogroup --clear-groups \
               "$VENV/bin/grade" check example.ipynb --device cpu --class Conv2dLoop)" \
            || fail "grade check as nobody: exit $?"$'\n'"$out"
        grep -q "protections off here.*unprivileged_user" <<<"$out" || fail "no word on protections: $out"
        ok "grade check as nobody -> exit 0, protections off listed" "$(elapsed "$t")"
        grep "protections off" <<<"$out" | sed 's/^/     | /'
    else
        echo "skip grade check as nobody: $PYTHON is not readable by nobody"
    fi
else
    echo "skip grade check as nobody: not root or no setpriv"
fi
echo "student acceptance: all checks passed"
