from cocon.logs import stage_logging
from cocon.train.pretrain import PretrainJob, launch

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        launch(PretrainJob(snakemake.params.dataset, "cpc", [snakemake.wildcards.view], snakemake.params.views_dir,
                           snakemake.input.manifest, snakemake.output[0], snakemake.params.state,
                           split=int(snakemake.wildcards.split), threads=snakemake.threads))
