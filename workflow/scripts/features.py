from cocon.analysis.features import FeaturesJob, run_features
from cocon.logs import stage_logging

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        run_features(FeaturesJob(snakemake.params.dataset, snakemake.wildcards.init, snakemake.wildcards.view,
                                 snakemake.params.views_dir, snakemake.input.manifest,
                                 snakemake.input.pretrained[0] if snakemake.input.pretrained else None,
                                 snakemake.output[0], split=int(snakemake.wildcards.split),
                                 batch_size=snakemake.params.batch_size, gpus=snakemake.params.gpus,
                                 threads=snakemake.threads))
