from cocon.logs import stage_logging
from cocon.paper import write_paper

if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        write_paper(snakemake.wildcards.dataset, snakemake.params.cells, snakemake.params.ensemble_weights,
                    snakemake.output.json, snakemake.output.markdown)
