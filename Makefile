# Two entry points (see README): `make demo` runs the whole pipeline on the synthetic sample, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SAMPLE := data/synthetic
SMALL := --embed-dim 128 --lstm-hidden 128 --attn-dim 128 --attn-hops 16 --conv-channels 32 64 64 64 --batch-size 32 --lr 2e-3
EPOCHS ?= 30

.PHONY: setup demo test bench clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(PY) data/synthetic/prepare.py --clips 2000 -o $(SAMPLE)
	$(PY) data_augmentation.py $(SAMPLE)/frames.csv -o $(SAMPLE)/frames_augmented.csv
	$(PY) attn_regression.py $(SAMPLE)/frames.csv -o weights/hybrid.pt --epochs $(EPOCHS) $(SMALL)
	$(PY) attn_test.py $(SAMPLE)/frames.csv --weights weights/hybrid.pt -o results/
	$(PY) attn_deploy.py $(SAMPLE)/openface --weights weights/hybrid.pt -o results/clips.csv \
		--frames-output results/output_pers.csv
	$(PY) au_analysis.py results/output_pers.csv --method both -o figures/
	@echo "demo done: results/ (evaluation, labelled clips), figures/ (Figure 6), weights/hybrid.pt"

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench.py --quick

clean:
	rm -rf results figures runs weights/*.pt weights/*.jsonl weights/*.png $(SAMPLE)/*.csv $(SAMPLE)/openface \
		$(SAMPLE)/truth.json
