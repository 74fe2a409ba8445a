from cocon.analysis.report import ReportJob, write_report
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    write_report(ReportJob(snakemake.params.dataset, paper=snakemake.input.paper, finetune=snakemake.input.finetune,
                           retrieval=snakemake.input.retrieval, probe=snakemake.input.probe,
                           consistency=snakemake.input.consistency, figures=snakemake.input.figures,
                           manifest=snakemake.input.manifest, views=snakemake.input.views,
                           views_dir=snakemake.params.views_dir, output=snakemake.output[0]))
