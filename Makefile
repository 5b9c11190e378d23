# Set-up and the two everyday commands. Both install everything into .venv on first use.
#   make search   run the main job: a DARTS search on the bundled sample, through a notebook
#   make test     run the test suite

PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.kdarts-installed

.PHONY: search test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

search: $(STAMP)
	$(VENV)/bin/kdarts-kernel push search --wait

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) build runs
