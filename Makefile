# Two commands from a fresh clone: `make demo` (the main job) and `make test`.
# POSIX make; the virtual environment is created and filled once (stamp file).

VENV = .venv
PY = $(VENV)/bin/python
PIP = $(VENV)/bin/pip
STAMP = $(VENV)/.requant-installed

.PHONY: venv demo test docs clean

venv: $(STAMP)

# The pinned CPU build of torch goes in first, so that the extras do not pull a CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[all,test,docs,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/requant demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf site reports
