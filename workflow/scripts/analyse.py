from cocon.analysis.analyse import AnalyseJob, run_analyses
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    run_analyses(AnalyseJob(snakemake.params.dataset, int(snakemake.wildcards.split), snakemake.params.features,
                            snakemake.input.manifest, snakemake.input.details, snakemake.params.views_dir,
                            snakemake.params.runs, snakemake.output.figures, snakemake.output.consistency_json,
                            snakemake.output.consistency, threads=snakemake.threads))
