"""What a grading worker keeps from one grade to the next (autograder/nbgrader_cache.py),
installed in a process of its own as a worker installs it."""
from tests.helpers import CHAPTERS, python, released

WORKER = """
import sys

import jsonschema
import nbformat
from nbgrader.api import Gradebook
from nbgrader.nbgraderformat import MetadataValidator, ValidationError
from nbgrader.preprocessors import CheckCellMetadata

schema_checks = []
validator = jsonschema.validators.validator_for(MetadataValidator().schema)
real_check = validator.check_schema
validator.check_schema = staticmethod(lambda *args: schema_checks.append(1) or real_check(*args))

from autograder import nbgrader_cache

nbgrader_cache.install()
checked = validator.check_schema
nbgrader_cache.install()  # a second call changes nothing
assert validator.check_schema is checked, "the schema check wrapped twice"
url, notebook = f"sqlite:///{sys.argv[1]}/gradebook.db", nbformat.read(sys.argv[2], as_version=4)

with Gradebook(url) as first:
    first.add_student("s1")
    compiled = len(first.engine._compiled_cache)
for student in ("s2", "s3"):
    with Gradebook(url) as later:
        later.add_student(student)
        assert later.engine is first.engine, "a new engine for every Gradebook"
assert len(first.engine._compiled_cache) == compiled, "the same queries compiled again"
assert [s.id for s in Gradebook(url).students] == ["s1", "s2", "s3"]

for _ in range(3):
    CheckCellMetadata().preprocess(notebook, {})
assert len(schema_checks) == 1, f"the schema was checked {len(schema_checks)} times"
cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("points"))
cell.metadata.nbgrader.points = "ten"
try:
    CheckCellMetadata().preprocess(notebook, {})
except ValidationError:
    print("corrupt metadata refused")
"""


def test_a_grading_worker_keeps_its_engines_and_checks_the_metadata_schema_once(tmp_path):
    notebook = released(CHAPTERS[0].name)
    assert python(WORKER, str(tmp_path), str(notebook)).strip() == "corrupt metadata refused"
