from cocon.data.demo import generate_demo
from cocon.logs import stage_logging

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        generate_demo(snakemake.output[0], **snakemake.params.dataset["demo"])
