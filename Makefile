# The two commands a newcomer needs: `make run` and `make test`. Each builds .venv by itself.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Lambda takes its runtime from the local interpreter: prefer 3.12 (pyenv's if the shim refuses), else python3 (>= 3.11).
PYTHON ?= $(shell for p in python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1) python3; do \
            "$$p" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)


.PHONY: help run test test-fast lint lock bench bench-quick bench-snap bench-pictures bench-round-trips load audit layer publish-layer infra deploy require-stage \
	require-python-3.12 venv run-venv clean destroy policies check-stage source-events chromium test-tools

help: ## list the targets, one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Two layers of one venv: what running needs (requirements-run.txt), then what testing needs (requirements-dev.txt).
# Both are compiled by `make lock`: every transitive dependency pinned, with hashes that the installer checks. The
# installer is uv (pinned and hashed in requirements-bootstrap.txt), installed first with pip.
UV := $(VENV)/bin/uv
$(VENV)/.run-installed: requirements-bootstrap.txt requirements-run.txt
	@test -n "$(PYTHON)" || { echo "No Python >= 3.11 found (3.12 preferred): install one or set PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(PY) || { echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-bootstrap.txt
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-run.txt
	@touch $@

$(VENV)/.installed: $(VENV)/.run-installed requirements-dev.txt
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-dev.txt
	@touch $@

run-venv: $(VENV)/.run-installed

venv: $(VENV)/.installed ## the full development environment in .venv (make test builds it)

run: run-venv ## the service on http://127.0.0.1:8000 with local S3 and catalog (PORT=, AUDIO=file.mp3, MONGODB_URI=)
	$(PY) scripts/run_local.py $(if $(PORT),--port $(PORT)) $(if $(AUDIO),--audio "$(AUDIO)")

test: venv lint chromium test-tools ## lint, type check, then every test
	$(PY) -m pytest

test-fast: venv test-tools ## the tests not marked slow
	$(PY) -m pytest -m "not slow"

# Debian's `lame` writes the CRC-protected MP3s that tests cut (FFmpeg's encoder cannot), `mpg123` is the second
# decoder that must play clips as FFmpeg does (tests/test_formats.py), `espeak-ng` speaks the phrases of the
# snap=pause tests (tests/speech.py), and `libfribidi0` lets Pillow's Raqm layout draw the reference that the card's
# right-to-left titles are compared with (tests/test_card.py). Installed once where possible (root with apt-get, as
# in CI); elsewhere the tests that need them are skipped and say why (under CI=true they fail).
TEST_TOOLS := lame mpg123 espeak-ng
test-tools: ## Debian's lame, mpg123, espeak-ng and libfribidi0 for the audio, snap=pause and card tests (apt-get, as root)
	@missing=$$(for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null 2>&1 || echo $$tool; done; \
	  ldconfig -p 2>/dev/null | grep -q 'libfribidi\.so\.0' || echo libfribidi0); \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "$$missing missing and cannot be installed here (needs root and apt-get): their tests will be skipped"; fi; }

# Debian's chromium, for the browser tests (the share page plays, tests/test_share_browser.py; the clips bucket's
# CORS, tests/test_clip_cors.py): installed with apt-get when missing and run as root (as CI is); anywhere else
# those tests skip and say why.
chromium: ## Debian's chromium for the browser tests (apt-get, as root)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core) \
	      || echo "could not install chromium with apt-get: the browser test will skip" >&2; \
	  else echo "chromium is missing and this is not root: the browser test will skip" >&2; fi; }

lint: venv ## ruff check, ruff format --check, mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Put top-level dependencies in requirements*.in, then run this: it re-resolves the three lock files in order
# (each later one constrained by the one before, so a package has one version everywhere).
LOCK := $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: venv ## re-pin requirements*.txt (with hashes) from requirements*.in
	$(LOCK) --output-file requirements-bootstrap.txt requirements-bootstrap.in
	$(LOCK) --output-file requirements.txt requirements.in
	$(LOCK) --output-file requirements-run.txt requirements-run.in
	$(LOCK) --output-file requirements-dev.txt requirements-dev.in
	$(LOCK) --output-file requirements-bench.txt requirements-bench.in

# Not part of `make test`: generates 3-hour episodes once (bench/cache/, ~1 min each), then a few minutes of runs.
bench: venv ## the full benchmark (bench/results.*); S3_LATENCY_MS=50: only the S3 round trips (bench/round_trips.json)
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-bench.txt
	$(if $(S3_LATENCY_MS),$(PY) -m bench.round_trips --delay-ms $(S3_LATENCY_MS),$(PY) -m bench.run)

# Not part of `make test`: a hit, a warm and a cold miss and the floor, every S3 request delayed (~3 minutes).
bench-round-trips: venv ## S3 round trips of a hit, a miss and the floor, each S3 request delayed (S3_LATENCY_MS=50)
	$(PY) -m bench.round_trips --delay-ms $(or $(S3_LATENCY_MS),50)

# Not part of `make test`: N concurrent clients against `make run`'s stack (CLIENTS=8 SECONDS=20).
load: venv ## N concurrent clients against make run's stack (CLIENTS=8 SECONDS=20)
	$(PY) bench/load.py --clients $(or $(CLIENTS),8) --seconds $(or $(SECONDS),20)

# Known vulnerabilities in the pinned requirements. Accept a finding by adding its id, with the reason, to
# .pip-audit-ignore. Needs pip-audit's vulnerability data (PyPI's JSON API or OSV): --strict fails when it can't
# audit a package rather than report a false "no known vulnerabilities".
audit: venv ## known vulnerabilities in the pinned requirements (pip-audit)
	$(PY) -m pip_audit --strict --progress-spinner off -r requirements.txt -r requirements-dev.txt \
	  $$(grep -v '^\s*#' .pip-audit-ignore | awk 'NF {print "--ignore-vuln " $$1}')

# Not part of `make test`: only the snap=pause rows and the unsnapped ones they are compared with, into bench/rows/.
bench-snap: venv ## snap=pause's bench rows (10-minute and 3-hour episodes) into bench/rows/ (untracked)
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-bench.txt
	$(PY) -m bench.run --only service-miss,service-hit,snap-miss,snap-hit,snap-miss-decoded \
	  $(if $(EPISODES),--episodes $(EPISODES))

# Not part of `make test`: a clip's waveform and card, cold (fresh processes) and warm; writes bench/pictures.json.
bench-pictures: venv ## what a waveform and a card cost, cold and warm (RUNS=5)
	$(PY) -m bench.pictures --runs $(or $(RUNS),5)

bench-quick: venv ## a quick benchmark (10-minute episodes) into bench/quick/ (untracked)
	$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-bench.txt
	$(PY) -m bench.run --quick

# ---- deployment (see README "Deploy to AWS"): infra, layer, publish-layer, deploy, in that order; destroy.
# REGION=eu-west-1 or AWS_REGION/AWS_DEFAULT_REGION: checked before any AWS call.
REGION_FLAG = $(if $(REGION),--region $(REGION))
layer: venv ## build the FFmpeg Lambda layer
	$(PY) layers/ffmpeg/build.py

publish-layer: require-stage layer ## publish the layer (STAGE=dev|prod) and record its ARN
	$(PY) layers/ffmpeg/publish.py $(STAGE) $(if $(BUCKET),--bucket $(BUCKET)) $(REGION_FLAG)

infra: require-stage venv ## deploy the stack Chalice does not own (STAGE=, RETENTION_DAYS=, LOG_RETENTION_DAYS=, DASHBOARD=true)
	$(PY) infra/deploy.py $(STAGE) $(REGION_FLAG) $(if $(RETENTION_DAYS),--retention-days $(RETENTION_DAYS)) \
	  $(if $(LOG_RETENTION_DAYS),--log-retention-days $(LOG_RETENTION_DAYS)) $(if $(filter true,$(DASHBOARD)),--dashboard)

# The IAM policies of a stage, written from its settings in .chalice/config.json (make deploy does it too).
policies: require-stage venv ## write the stage's IAM policy files from its settings
	$(PY) infra/stage.py policies $(STAGE)

# Optional, once per source bucket: its events to EventBridge (keeps the notifications other consumers set).
source-events: require-stage venv ## turn on the source bucket's delivery to EventBridge
	$(PY) infra/stage.py source-events $(STAGE) $(REGION_FLAG)

# What a deploy needs that can be checked without AWS (region, settings, the FFmpeg layer).
check-stage: require-stage venv ## check region, settings and the FFmpeg layer without calling AWS
	$(PY) infra/stage.py check $(STAGE) $(REGION_FLAG)

# Chalice takes the Lambda runtime from the interpreter it runs in: refuse anything older than 3.12 (checked before
# the venv prerequisite, so that a refused deploy never installs anything).
deploy: require-stage require-python-3.12 venv ## chalice deploy from any clone (STAGE=dev|prod, REGION=)
	$(PY) infra/stage.py deploy $(STAGE) $(REGION_FLAG)

# chalice delete, the stored deployed state, the layer versions and the infra stack; the clips bucket is retained.
destroy: require-stage venv ## remove the stage (the clips bucket is retained)
	$(PY) infra/stage.py destroy $(STAGE) $(REGION_FLAG)

require-python-3.12:
	@! $(PY) -c '' 2>/dev/null || $(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v >= (3, 12) else \
	  "make deploy needs Python 3.12 or newer: Chalice deploys the Lambda runtime of the interpreter it runs in, " \
	  "and this .venv has %d.%d (python3.11 on Lambda is deprecated, and the FFmpeg layer needs Amazon Linux 2023). " \
	  "Rebuild it: make clean && make venv PYTHON=/path/to/python3.12" % v)'

require-stage:
	@case "$(STAGE)" in dev|prod) ;; *) echo "Set STAGE=dev or STAGE=prod" >&2; exit 2;; esac

clean: ## remove .venv and local state
	rm -rf $(VENV) .pytest_cache .local
