# Two entry points (see README): `make demo` runs the whole pipeline on the synthetic sample, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SAMPLE := data/synthetic

.PHONY: setup demo test test-fast openface bench compare clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(PY) data/synthetic/prepare.py --clips 2000 -o $(SAMPLE)
	$(PY) data_augmentation.py $(SAMPLE)/frames.csv -o $(SAMPLE)/frames_augmented.csv
	$(PY) attn_regression.py $(SAMPLE)/frames.csv -o weights/hybrid.pt
	$(PY) attn_test.py $(SAMPLE)/frames.csv --weights weights/hybrid.pt -o results/
	$(PY) attn_deploy.py $(SAMPLE)/openface --weights weights/hybrid.pt -o results/clips.csv \
		--frames-output results/output_pers.csv
	$(PY) au_analysis.py results/output_pers.csv --method both -o figures/
	@echo "demo done: results/ (evaluation, labelled clips), figures/ (Figure 6), weights/hybrid.pt"

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# OpenFace 2.2 into ~/.cache/openface-bigfive (OPENFACE_SRC: a source folder or tarball; else a clone, which needs internet)
openface:
	tools/build_openface.sh

bench: setup
	$(PY) bench.py --quick

compare: setup
	$(PY) compare.py --quick

clean:
	rm -rf results figures runs comparison bench.json weights/*.pt weights/*.jsonl weights/*.png weights/*.json \
		$(SAMPLE)/*.csv $(SAMPLE)/*.parquet $(SAMPLE)/openface $(SAMPLE)/truth.json
