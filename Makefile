# Each target sets up what it needs itself: the Debian packages it lacks (tools/system.sh,
# installed when run as root) and .venv with the pinned requirements.txt.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONPATH := $(CURDIR)
SUBMISSIONS ?= submissions
OUT ?= grades/grades.csv
COURSE ?= autograder
BOOK_SRC ?= .
BOOK_OUT ?= $(BOOK_SRC)

.PHONY: book book-cache test release grade clean system-book system-test system-grade

system-book system-grade system-test:
	@tools/system.sh $(@:system-%=%)

$(BIN)/.installed: requirements.txt
	python3 -m venv "$$(readlink -f $(VENV))"  # .venv may be a link to a venv elsewhere
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The execution cache; it may be a link to another build's (the test suite links the
# checkout's, so `make book` and `make test` run each page once between them).
CACHE = $(or $(realpath $(BOOK_OUT)/_build/.jupyter_cache),$(BOOK_OUT)/_build/.jupyter_cache)
# The pages that run code, longest first by the budget each one states (autograder/chapters.py).
PAGES = $(shell $(BIN)/python -m autograder.chapters pages $(BOOK_SRC))
TIMEOUT = $(shell sed -n 's/^ *timeout: *//p' $(BOOK_SRC)/_config.yml)
# How many pages run at once. The test suite passes 1: it builds the book beside other tests.
BOOK_JOBS ?= 2
# What the cached outputs depend on besides each page's code: the pinned packages and the
# reference modules the pages import.
BOOK_INPUTS ?= requirements.txt $(wildcard solutions/*.py)
INPUTS = $(shell cat $(BOOK_INPUTS) | sha256sum | cut -d' ' -f1)

# Cached outputs are keyed on each page's code: they all go when INPUTS change.
# The pages run into the execution cache BOOK_JOBS at a time (each uses one thread: torch's
# is set by each page, BLAS and OpenMP pools' here),
# and Jupyter Book renders them from there. Jupyter Book exits 0 when a cell
# fails: a page that failed here runs again inside the build, where
# -W --keep-going reports every failing cell and warning and exits non-zero.
book: book-cache
	$(BIN)/jupyter-book build $(BOOK_SRC) --path-output $(BOOK_OUT) --warningiserror --keep-going

book-cache: system-book $(BIN)/.installed
	@test "$$(cat $(CACHE)/inputs 2>/dev/null)" = "$(INPUTS)" || \
	  { rm -rf $(CACHE) && mkdir -p $(CACHE) && echo "$(INPUTS)" > $(CACHE)/inputs; }
	printf '%s\n' $(PAGES) | xargs -r $(BIN)/jcache notebook --cache-path $(CACHE) add --reader myst_nb_md
	printf '%s\n' $(PAGES) | OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  xargs -r -P $(BOOK_JOBS) -n 1 \
	  $(BIN)/jcache notebook --cache-path $(CACHE) execute --no-force --timeout $(TIMEOUT)

test: system-test $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup

release: $(BIN)/.installed
	$(BIN)/python -m autograder build

# DB: the gradebook's SQLAlchemy URL (default: SQLite in COURSE); WORKERS: submissions at once
grade: system-grade $(BIN)/.installed
	$(BIN)/python -m autograder grade $(SUBMISSIONS) --out $(OUT) --course-dir $(COURSE) \
	  $(if $(DB),--db $(DB)) $(if $(WORKERS),--workers $(WORKERS))

clean:
	rm -rf _build
