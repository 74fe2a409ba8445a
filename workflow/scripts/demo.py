from cocon.data.demo import generate_demo
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    generate_demo(snakemake.output[0], **snakemake.params.dataset["demo"])
