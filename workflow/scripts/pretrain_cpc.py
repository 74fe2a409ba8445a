from cocon.logs import stage_logging
from cocon.train.pretrain import PretrainJob, launch

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        view = snakemake.wildcards.view
        launch(PretrainJob(snakemake.params.dataset, "cpc", [view], snakemake.params.views_dir,
                           snakemake.input.manifest, {view: snakemake.output[0]}, snakemake.params.state,
                           threads=snakemake.threads))
