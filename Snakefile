# CoCon: raw videos -> manifest -> view shards (rgb, flow, pose, seg) -> CPC per view -> CoCon jointly
# -> fine-tuning and dense testing per view -> results/{dataset}/finetune.json.
# Targets: results/{dataset}/paper.md (the paper's tables), finetune.json (every split), views.tsv.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/pose.smk"
include: "workflow/rules/seg.smk"
include: "workflow/rules/views.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/paper.smk"


rule all:
    input:
        all_targets(),
    default_target: True
