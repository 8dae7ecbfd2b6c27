"""The SSLD recipe end to end, one command: tools/ssld_pipeline.py -c <pipeline yaml> [-o section.key=value].

Stages: prepare data -> teacher -> mine -> (CE baseline) -> distill -> fine-tune -> export + predict.
A re-run skips complete stages and resumes an interrupted one. Ends with summary.md, summary.png and the
commands that evaluate, export and predict with the artefacts.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.recipes.ssld import Pipeline, load_pipeline_config  # noqa: E402
    from ppssld.recipes.ssld.summary import next_commands, plot_summary, summary_table  # noqa: E402
    from ppssld.utils.io import atomic_write_text  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402


def main() -> None:
    """Parse, run every stage, print and save the final table."""
    # no --trust-weights here: a stage trusts its weights through its own overrides (Global.trust_weights=True)
    parser = cli.base_parser("Run the SSLD recipe end to end", trust_flag=False,
                             config_help="pipeline YAML (sections output_dir, data, teacher, mine, baseline, "
                                         "distill, finetune, export); required",
                             override_help="override one pipeline value, section.key=VALUE (VALUE is read as "
                                           "YAML), e.g. -o mine.k=300; several after one -o or repeat -o "
                                           "(default: none)")
    args = parser.parse_args()
    cfg = load_pipeline_config(args.config, cli.flat_overrides(args.override))
    setup_logging(os.path.join(cfg["output_dir"], "pipeline.log"))
    results = Pipeline(cfg).run()
    table = summary_table(results)
    picture = os.path.join(cfg["output_dir"], "summary.png")
    if plot_summary(results, picture):
        table += f"\n\n![summary](summary.png)\n\nPicture: `{picture}`"
    commands = next_commands(results)
    if commands:
        table += "\n\nNext, with these artefacts (run as written from this directory):\n\n```bash\n" + "\n".join(
            commands) + "\n```"
    atomic_write_text(os.path.join(cfg["output_dir"], "summary.md"), table + "\n")
    print("\n" + table + "\n")


if __name__ == "__main__":
    cli.run(main)
