"""The course's nbgrader autograder: exercise build, drift check and grading.

    python -m autograder build                 regenerate source notebooks + exercises/
    python -m autograder check                 exercises/ current? solutions pass, stubs fail?
    python -m autograder grade SUBMISSIONS --out grades.csv
"""
