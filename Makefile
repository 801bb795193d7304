# The two quick-start commands are `make demo` and `make test`; each installs what it needs first.
# Everything is idempotent: a second run only re-installs when setup.py or this file changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.halo_ros-installed
EXTRAS := ros,sim,model,engine,robot,transport,recording,viz,dev
# The MuJoCo headless GL libraries (EGL, OSMesa fallback), libusb for RealSense, socat for
# virtual serial ports, chromium for the report rendering test (headless screenshots).
APT_PACKAGES := libegl1 libgl1 libgles2 libosmesa6 libusb-1.0-0 socat chromium
export MUJOCO_GL ?= egl

.PHONY: install apt demo test test-fast bench lint clean

install: $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing $$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): setup.py Makefile | apt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first and exactly this version: any looser spec pulls several GB of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/halo-ros demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not slow'

# Every benchmark prints its table and writes JSON under bench-results/ (copy the figures, with
# the machine they name, into BENCHMARKS.md).
BENCHES := bench-sim bench bench-seams bench-dynamixel bench-recording bench-transport bench-policy bench-controller
bench: install
	@mkdir -p bench-results
	@for b in $(BENCHES); do $(VENV)/bin/halo-ros $$b --json bench-results/$$b.json || exit 1; done
	$(VENV)/bin/halo-ros seam-eval --json bench-results/seam-eval.json

lint: install
	$(VENV)/bin/ruff check halo_ros tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
