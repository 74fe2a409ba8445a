# CoCon: raw videos -> manifest -> view shards (rgb, flow, pose, seg) -> CPC per view -> CoCon jointly
# -> fine-tuning and dense testing per view -> results/{dataset}/finetune.json.
# -> frozen features -> retrieval, linear probe, class consistency, figures -> results/{dataset}/report.html.
# Targets: results/{dataset}/paper.md (the paper's tables), finetune.json (every split), report.html, views.tsv,
# evidence.json (a dataset and its seed variants).
import os
from pathlib import Path

from snakemake.utils import min_version

from cocon.config import read_yaml, validate_workflow_config

min_version("9.0")

# envs/cocon.yaml installs this checkout through pip's ${COCON_CHECKOUT} (docs/CONDA.md): conda builds
# the environment from a copy of the file elsewhere, where no relative path would reach it
os.environ.update(COCON_CHECKOUT=workflow.basedir)


# Snakemake reports invalid YAML in its config file without naming the file or the line
if Path("config/config.yaml").is_file():
    read_yaml("config/config.yaml")


configfile: "config/config.yaml"


# Snakemake's own validate() would not name the config file a refused key is in
validate_workflow_config(config, workflow.configfiles, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/pose.smk"
include: "workflow/rules/seg.smk"
include: "workflow/rules/views.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/import_checkpoint.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/retrieval.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/evidence.smk"


rule all:
    input:
        all_targets(),
    default_target: True
