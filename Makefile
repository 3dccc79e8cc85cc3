# The README's two commands: `make demo` and `make test`. Both set up .venv themselves and are safe to rerun.
# Docs: `make nbs` re-executes the notebooks (they keep their outputs), `make readme` writes README.md from
# nbs/index.ipynb, `make docs` builds the site into site/. Quarto (nbdev_readme, nbdev_docs) does not install here.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.imgclean-installed
# torch/torchvision builds this project is tested with; override e.g. `make TORCH_SPEC="torch torchvision"`
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install system-deps check-export check-clean check-readme scratch nbtest pytest bench clean-venv \
        nbs readme docs docs-check

# Scratch space for the notebooks' and tests' temporary folders (about 1.5 GB a run): emptied when a run starts,
# removed when `make test` passes, so repeated runs don't fill /tmp; a failed run leaves it for a look.
SCRATCH := $(CURDIR)/.test-tmp

install: $(STAMP)

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	@touch $(STAMP)

# Debian's chromium for the browser tests (never `playwright install`: it downloads its own browser).
system-deps:
	@if ! command -v chromium >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo || echo sudo ); \
	  echo "installing Debian's chromium for the browser tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	    || { echo "could not install chromium (apt-get install -y chromium); browser tests will fail"; [ "$${CI:-}" != true ] || exit 1; }; \
	fi

demo: $(STAMP)
	$(BIN)/imgclean demo

# Fingerprint of a set of files, to check that a tool left them unchanged.
define fingerprint
find $(1) -type f -name '$(2)' -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum
endef

check-export: $(STAMP)
	@before=$$($(call fingerprint,imgclean,*.py)); \
	$(BIN)/nbdev_export; \
	after=$$($(call fingerprint,imgclean,*.py)); \
	if [ "$$before" != "$$after" ]; then echo "imgclean/ was out of step with nbs/: run nbdev_export and commit the result"; exit 1; fi; \
	echo "nbdev_export: imgclean/ in sync"

check-clean: $(STAMP)
	@before=$$($(call fingerprint,nbs,*.ipynb)); \
	$(BIN)/nbdev_clean; \
	after=$$($(call fingerprint,nbs,*.ipynb)); \
	if [ "$$before" != "$$after" ]; then echo "notebooks carried metadata noise (outputs are kept: clear_all = False): run nbdev_clean and commit the result"; exit 1; fi; \
	echo "nbdev_clean: notebooks clean"

scratch:
	@rm -rf $(SCRATCH) && mkdir -p $(SCRATCH)

nbtest pytest: export TMPDIR := $(SCRATCH)

nbtest: $(STAMP) scratch
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP) system-deps scratch
	$(BIN)/python -m pytest tests -ra

test: check-export check-clean check-readme docs-check nbtest pytest
	@rm -rf $(SCRATCH)

# Notebooks keep their outputs (plots, tables, widget state) so they read on GitHub and in the docs. `make nbs`
# re-executes every notebook in place with the current code (2 at a time), then cleans metadata and rewrites the
# README; a notebook that fails keeps its old outputs and makes the target fail. Cells flagged `#| browser` are not run (they start servers and browsers; pytest covers them) and keep no
# output; `#| slow` cells are run, so their figures are saved. `make nbs NBS="tutorial 06_audit"` runs a few,
# `make nbs NBS_SKIP="slow|browser"` skips both. CI runs the notebooks (nbdev_test), not a comparison of outputs.
NBS ?=
NBS_SKIP ?= browser
nbs: export TMPDIR := $(SCRATCH)
nbs: $(STAMP) scratch
	@rc=0; $(BIN)/python docs/nbtools.py run $(NBS) --skip '$(NBS_SKIP)' || rc=$$?; \
	$(BIN)/nbdev_clean; $(BIN)/python docs/nbtools.py readme; rm -rf $(SCRATCH); exit $$rc

# README.md (and README_files/, the images of index's outputs) is generated from nbs/index.ipynb; CI checks it is.
readme: $(STAMP)
	$(BIN)/python docs/nbtools.py readme

check-readme: $(STAMP)
	$(BIN)/python docs/nbtools.py readme --check

# The site: every notebook with its saved outputs, the API's docments after each export cell, an API index and the
# benchmark figures (mkdocs-material + mkdocs-jupyter; nothing is executed). `make docs` writes site/;
# `docs-check` (part of `make test`) builds it into the scratch folder and fails on a warning (a broken link, a
# notebook missing from mkdocs.yml's nav).
DOCS_SRC := _docs_src
export NO_MKDOCS_2_WARNING := 1
docs: $(STAMP)
	$(BIN)/python docs/nbtools.py stage $(DOCS_SRC)
	$(BIN)/mkdocs build --strict -q -d site
	@echo "site built in site/ (open site/index.html, or serve it: $(BIN)/python -m http.server -d site)"

docs-check: $(STAMP) scratch
	$(BIN)/python docs/nbtools.py stage $(DOCS_SRC)
	$(BIN)/mkdocs build --strict -q -d $(SCRATCH)/site
	@echo "docs: site builds"

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean-venv:
	rm -rf $(VENV)
