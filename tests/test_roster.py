"""Rosters: matching submissions to students, and the Canvas and Moodle import files."""
import csv
import io
import re

import pytest

from grader.errors import UsageError
from grader.lms_exports import canvas_csv, moodle_csv
from grader.roster import Student, load_roster, match_roster


def report(path, score=50.0, metadata=None):
    return {"submission": {"path": path, "sha256": "0" * 64, "kind": "notebook", "metadata": metadata or {}},
            "score": score, "max_score": 100.0, "assignment": {"id": "a", "title": "Homework 3"}}


def roster(tmp_path, text):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    return load_roster(path)


def test_the_roster_file(tmp_path):
    students = roster(tmp_path, "\ufeffStudent ID,Name,E-mail,Submission\n s1 ,Ann,ann@x.org,\n,,,\ns2,Bob,,b.ipynb\n")
    assert students == (Student("s1", "Ann", "ann@x.org"), Student("s2", "Bob", submission="b.ipynb"))
    canvas_export = roster(tmp_path, 'Student,ID,SIS User ID,SIS Login ID,Section,HW (1)\n"Doe, Jane",77,s1,jdoe,A,9\n')
    assert canvas_export == (Student("s1", "Doe, Jane", section="A", sis_login_id="jdoe", canvas_user_id="77"),)
    moodle_export = roster(tmp_path, "First name,Last name,ID number,Email address\nJane,Doe,s1,j@x.org\n")
    assert moodle_export == (Student("s1", email="j@x.org"),)
    with pytest.raises(UsageError, match="no student_id column"):
        roster(tmp_path, "name\nAnn\n")
    with pytest.raises(UsageError, match="appears twice"):
        roster(tmp_path, "student_id\ns1\ns1\n")
    with pytest.raises(UsageError, match="line 3: empty student_id"):
        roster(tmp_path, "student_id,name\ns1,Ann\n,Bob\n")


def test_each_way_of_matching_and_every_leftover_is_listed():
    students = (Student("s1", submission="hand-in/ann_final.ipynb"),     # by the roster's own column
                Student("s2", sis_login_id="bob7"),                      # by --roster-pattern
                Student("s3", email="cy@x.org"),                         # by notebook metadata
                Student("12345"),                                        # by a whole word of the path
                Student("s5"), Student("s6"), Student("s7"))             # several; contested; none
    reports = [report("hand-in/ann_final.ipynb"), report("submitted/bob7/hw.ipynb"),
               report("x/cy.ipynb", metadata={"email": "CY@x.org"}), report("dl/doe_12345_99_hw.ipynb"),
               report("dl/s5_a.ipynb"), report("dl/s5_b.ipynb"), report("dl/nobody.ipynb"),
               report("dl/s1_s6.ipynb"), report("dl/hw123456.ipynb")]
    ids = [f"r{i}" for i in range(len(reports))]
    result = match_roster(students, reports, ids, pattern="submitted/{sis_login_id}/*.ipynb")
    assert {(m.student.student_id, m.submission_id, m.by) for m in result.matched} == {
        ("s1", "r0", "submission"), ("s2", "r1", "pattern"), ("s3", "r2", "metadata"), ("12345", "r3", "path")}
    assert [(s.student_id, ids_) for s, ids_ in result.several] == [("s5", ("r4", "r5"))]
    assert result.unmatched == (("r6", "dl/nobody.ipynb"), ("r8", "dl/hw123456.ipynb"))  # 12345 is not a word
    assert result.ambiguous == (("r7", "dl/s1_s6.ipynb", ("s1", "s6")),)
    assert [s.student_id for s in result.without_submission] == ["s7"]   # s6 is listed with r7
    lines = result.problems()
    assert len(lines) == 4 and "s5 (r4, r5)" in lines[2] and "not exported" in lines[2]
    data = result.to_dict()
    assert len(data["matched"]) == 4 and data["students_without_submission"] == [
        {"student_id": "s7", "name": "", "email": ""}]


def test_a_notebook_author_matches_a_name_and_patterns_are_checked():
    students = (Student("s1", name="Ada Lovelace"),)
    result = match_roster(students, [report("a.ipynb", metadata={"authors": "Ada Lovelace, Bob"})], ["a"])
    assert [m.by for m in result.matched] == ["metadata"]
    for bad in ("submitted/*", "{nope}/*", "{student_id}/{student_id}"):
        with pytest.raises(UsageError):
            match_roster(students, [], [], pattern=bad)


# ---------------------------------------------------------------------------------------------
# The import formats. Canvas: the rules of canvas-lms app/models/gradebook_importer.rb
# (header?, update_column_count, check_for_non_student_row, process_student). Moodle: the rules
# of grade/import/csv/classes/load_data.php (prepare_import_grade_data, update_grade_item).
# ---------------------------------------------------------------------------------------------


def canvas_import(text):
    """What Canvas's importer would read: assignments, points possible, (user id, sis id, login, grade)."""
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert len(header) > 3 and "Student" in header[0] and "ID" in header[1]
    if re.search(r"SIS\s+Login\s+ID", header[2]):
        student_columns = 4
    else:
        assert re.search(r"SIS\s+User\s+ID", header[2]) and re.search(r"SIS\s+Login\s+ID", header[3])
        student_columns = 5
    assert "Section" in header[student_columns - 1]
    assignments = header[student_columns:]
    points, students = None, []
    for row in rows[1:]:
        assert len(row) == len(header)
        if "Points Possible" in row[0]:
            points = row[student_columns:]
            continue
        grades = row[student_columns:]
        for grade in grades:
            assert grade in ("", "-", "EX") or re.fullmatch(r"-?[0-9.,]+%?", grade), grade
        assert row[1] or row[2] or row[3] or row[0], "a row Canvas cannot match to a student"
        students.append((row[1], row[2], row[3], grades[0]))
    return assignments, points, students


def moodle_import(text, known_id_numbers):
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    id_column = header.index("ID number")      # the column the teacher maps to useridnumber
    grades = {}
    for row in rows[1:]:
        if len(row) <= 1:
            continue
        # A user Moodle cannot find aborts the whole import.
        assert row[id_column] in known_id_numbers, f"user not found: {row[id_column]!r}"
        value = row[header.index("Homework 3")]
        assert value in ("", "-") or float(value) >= 0
        grades[row[id_column]] = value
    return grades


def test_canvas_and_moodle_files_import_in_their_formats():
    students = (Student("s1", name="Doe, Jane", sis_login_id="jdoe", section="A", canvas_user_id="77"),
                Student("s2", name="=HYPERLINK(\"x\")", email="bob@x.org"), Student("s3"))
    reports = [report("s1.ipynb", 87.456), report("s2.ipynb", 100.0), report("nobody.ipynb", 3.0)]
    result = match_roster(students, reports, ["s1", "s2", "n"])
    scores = {"s1": 87.456, "s2": 100.0, "n": 3.0}
    canvas = canvas_csv(result, scores, "Homework 3", 100.0)
    assignments, points, rows = canvas_import(canvas)
    assert assignments == ["Homework 3"] and points == ["100"]
    assert rows == [("77", "s1", "jdoe", "87.46"), ("", "s2", "", "100")]
    assert "'=HYPERLINK" in canvas and "\r\n" in canvas          # a formula stays text
    moodle = moodle_csv(result, scores, "Homework 3")
    assert moodle_import(moodle, {"s1", "s2", "s3"}) == {"s1": "87.46", "s2": "100"}
    assert moodle.splitlines()[0] == "ID number,Email address,Homework 3"


def test_every_student_text_cell_of_the_lms_files_is_neutralized():
    """Names, logins and sections come from the roster (a student may choose a display name):
    any that a spreadsheet would read as a formula is text; the grades stay numbers."""
    triggers = ["=cmd|' /C calc'!A0", "+1+1", "-A1", "@SUM(1)", "\t=1", "\r=1", "\uff1dcmd()"]   # and full-width =
    students = tuple(Student(f"s{i}", name=t, sis_login_id=t, section=t, email=f"s{i}@x.org")
                     for i, t in enumerate(triggers))
    reports = [report(f"s{i}.ipynb", float(i)) for i in range(len(triggers))]
    result = match_roster(students, reports, [f"s{i}" for i in range(len(triggers))])
    scores = {f"s{i}": float(i) for i in range(len(triggers))}
    for text in (canvas_csv(result, scores, "-HW", 100.0), moodle_csv(result, scores, "-HW")):
        for row in list(csv.reader(io.StringIO(text)))[1:]:
            for cell in row:
                assert not cell or cell[0] not in "=+-@\t\r\uff1d", row
    rows = list(csv.reader(io.StringIO(canvas_csv(result, scores, "HW", 100.0))))
    assert [row[-1] for row in rows[2:]] == [str(i) for i in range(len(triggers))]
    assert rows[2][0] == "'=cmd|' /C calc'!A0" and rows[0][-1] == "HW"
