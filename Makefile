# Two commands: `make demo` and `make test`. Both set up .venv from this repository's
# own files first, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo demo-seeds evidence evidence-confirm test lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@echo "demo outputs: results/demo/report.html (every table and figure), paper.md (the paper's tables), finetune.json, split1/ (pretrain, finetune, features, analysis), views/, logs/"

# the demo with training seeds 0, 1, 2 (config/datasets/demo_seed*.yaml): mean and spread
demo-seeds: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/demo/finetune.json results/demo_seed1/finetune.json \
		results/demo_seed2/finetune.json
	$(BIN)/cocon seeds results/demo/finetune.json results/demo_seed1/finetune.json \
		results/demo_seed2/finetune.json --out results/demo_seeds.md

# the evidence benchmark (README "Evidence"): random, CPC and CoCon with the paper's schedule over
# training seeds 0, 1, 2 on the motion benchmark; 37-45 minutes on 2 AVX-512 cores, 82 on 2 AVX2 cores. One thread per training
# job, two jobs at a time: on 2 cores that is faster than one job on two threads.
evidence: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --set-threads pretrain_cpc=1 pretrain_cocon=1 features=1 probe=1 \
		-- results/evidence/evidence.json
	@echo "evidence: results/evidence/evidence.md and evidence.json"

# the confirming run pre-registered in README "Evidence": new training seeds 3, 4, 5 on the same
# views, summarised as make evidence summarises seeds 0-2, and the probe read at the fixed C = 10
# (bench.probe_c) beside the cross-validated one
evidence-confirm: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --set-threads pretrain_cpc=1 pretrain_cocon=1 features=1 probe=1 \
		-- results/evidence_seed3/evidence.json
	$(BIN)/python -m bench.probe_c --datasets evidence_seed3 evidence_seed4 evidence_seed5 > results/evidence_confirm.json
	@echo "evidence-confirm: results/evidence_seed3/evidence.md and results/evidence_confirm.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint

# envs/cocon.yaml (the --use-conda environment) from pyproject.toml, after .venv is reinstalled
# from it: keeps every pin pyproject.toml still admits, pins the rest to .venv's versions.
# `make envs ENVS_FLAGS=--from-venv` re-pins everything; `ENVS_FLAGS=--check` only compares.
.PHONY: envs
envs: $(STAMP)
	$(BIN)/python envs/generate.py $(ENVS_FLAGS)

bench: $(STAMP)
	$(BIN)/python -m bench.flow_overhead
	$(BIN)/python -m bench.rgb_bytes
	$(BIN)/python -m bench.dry_run
	$(BIN)/python -m bench.pose_seg
	$(BIN)/python -m bench.train_step
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.pose_resolution
	$(BIN)/python -m bench.pose_people
	$(BIN)/python -m bench.flow_cost
	$(BIN)/python -m bench.loader_batched
	$(BIN)/python -m bench.loader_device
	$(BIN)/python -m bench.precision --seeds 5 --threads 1
	$(BIN)/python -m bench.tvl1_accuracy
	$(BIN)/python -m bench.features
	$(BIN)/python -m bench.import_checkpoint
	$(BIN)/python -m bench.import_views
	$(BIN)/python -m bench.checkpoint_cost

clean-demo:
	rm -rf results/demo

# the one prepared GPU check (issues 12, 22): TV-L1 torch on CUDA against OpenCV, both loaders, the
# training step (fp32, bf16 + channels_last, torch.compile; MFU), bf16 against fp32 over 300 steps,
# a tiny pretraining with either loader; one JSON.
# Meant to fit in about 10 minutes on one GPU (never run: no GPU yet). `make gpu-check GPU_CHECK_FLAGS="--device cpu --small"`: the dry run.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check --out results/gpu_check.json $(GPU_CHECK_FLAGS)

# the optional OpenMMLab backends (mmpose, mmsegmentation, mmdet) into .venv, as the README's
# recipe: envs/mm.sh builds mmcv once per mmcv/torch/Python version and keeps the wheel in
# ~/.cache/cocon-mm (COCON_MM_CACHE), so a later `make mm` on the same machine installs it
# in 20 seconds. `make mm test` runs the suite with the mm tests.
.PHONY: mm
MM_STAMP := $(VENV)/.mm-installed
mm: $(MM_STAMP)
$(MM_STAMP): $(STAMP) envs/mm.sh envs/mmcv_cxx.sh
	bash envs/mm.sh $(VENV)
	touch $@
