# accelerando — two-command quick start: `make demo` and `make test`.
# Both create .venv, install every Python dependency and (as root) the Debian packages.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEB_PACKAGES := fluidsynth fluid-soundfont-gm timgm6mb-soundfont chromium chromium-driver g++ python3-dev
STAMP  := $(VENV)/.installed

.PHONY: demo test setup sysdeps lint clean corpus

demo: setup
	$(PY) -m accelerando demo

test: setup
	$(PY) -m accelerando.testing.warmup
	$(PY) -m pytest -q -n 2 tests

setup: sysdeps $(STAMP)

# Install the Debian packages when running as root; otherwise print one line naming them.
sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	      || { echo "error: apt-get could not install$$missing; install them and rerun" >&2; exit 1; }; \
	  else \
	    echo "please install the Debian packages:$$missing (sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[data,eval,gen,listen,dev]'
	# torchcrepe declares torchaudio (no CPU build here) but never needs it for our use: install it without deps.
	$(PIP) install -q --no-deps 'torchcrepe>=0.0.22' 'resampy>=0.4'
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Full corpus build into the cache directory (about 17 min with 2 workers on the dev CPU; resumable).
corpus: setup
	$(PY) -m accelerando data build --workers 2

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
