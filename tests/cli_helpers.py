"""Running an entry point's `main` in the test process, as the command line would."""

from mixem_tf.cli import run


def call_entry_point(main, capsys, *args):
    """(exit code, stdout, stderr) of `main` run through `mixem_tf.cli.run` with `args`."""
    try:
        code = run(main, [str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err
