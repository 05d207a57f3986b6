"""Reference solutions the grader checks submissions against."""
