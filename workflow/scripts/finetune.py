from cocon.logs import stage_logging
from cocon.train.finetune import FinetuneJob, launch

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        launch(FinetuneJob(snakemake.params.dataset, snakemake.wildcards.init, snakemake.wildcards.view,
                           snakemake.params.views_dir, snakemake.input.manifest,
                           snakemake.input.pretrained[0] if snakemake.input.pretrained else None,
                           snakemake.output.model, snakemake.output.scores, snakemake.params.state,
                           split=int(snakemake.wildcards.split), threads=snakemake.threads))
