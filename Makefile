# Each target sets up .venv itself; nothing needs installing by hand.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)
SUBMISSIONS ?= submissions
OUT ?= grades/grades.csv
BOOK_SRC ?= .
BOOK_OUT ?= $(BOOK_SRC)

.PHONY: book test release grade clean

$(BIN)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

CACHE = $(BOOK_OUT)/_build/.jupyter_cache

# Jupyter Book exits 0 when a cell fails; -W --keep-going turns every failing
# cell and every warning into a non-zero exit, after reporting them all.
# Cached outputs are keyed on code only: they go when the pinned packages change.
book: $(BIN)/.installed
	@cmp -s requirements.txt $(CACHE)/requirements.txt || \
	  { rm -rf $(CACHE) && mkdir -p $(CACHE) && cp requirements.txt $(CACHE)/; }
	$(BIN)/jupyter-book build $(BOOK_SRC) --path-output $(BOOK_OUT) --warningiserror --keep-going

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup

release: $(BIN)/.installed
	$(BIN)/python -m autograder build

grade: $(BIN)/.installed
	$(BIN)/python -m autograder grade $(SUBMISSIONS) --out $(OUT)

clean:
	rm -rf _build
