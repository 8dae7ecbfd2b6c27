"""Serve a PaddleHub module on one address only (default 127.0.0.1); ``hub serving start`` binds 0.0.0.0.

python deploy/python/hub_serving_local.py --module_dir inference/hub/mobilenetv3_small_x0_35_ssld --port 8866

PaddleHub 2.4.0 hard-codes ``0.0.0.0`` in every ``hub serving`` mode and has no host option, so this
runs the same Flask app PaddleHub builds (``/predict/<name>``, same request and answer) bound to
``--host``. Single process, Flask's server: put a reverse proxy in front for anything beyond a host's
own clients. Loading a module runs its ``module.py``: serve only modules you trust.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)


def main() -> None:
    """Install the module into PaddleHub's serving table the way ``hub serving start`` does, then serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module_dir", required=True, help="the module folder, holding module.py (required)")
    parser.add_argument("--name", default=None, help="URL name (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8866, help="TCP port to listen on (default 8866)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.module_dir, "module.py")):
        parser.exit(2, f"hub_serving_local: error: {args.module_dir}: no module.py (not a PaddleHub module)\n")
    from paddlehub.commands.serving import ServingCommand
    from paddlehub.serving.app_compat import create_app

    name = args.name or os.path.basename(os.path.normpath(args.module_dir))
    command = ServingCommand()
    command.modules_info = {name: {"init_args": {"directory": os.path.abspath(args.module_dir)}, "predict_args": {}}}
    command.preinstall_modules()
    create_app(init_flag=False, configs=command.modules_info).run(host=args.host, port=args.port, threaded=False)


if __name__ == "__main__":
    with missing_dependency_exits():  # no PaddleHub or Flask: one line and status 2, not a traceback
        main()
