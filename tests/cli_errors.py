"""What the tests ask of a refused command: exit status 2 and one line on stderr."""

from l2o.cli import main


def one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run ``l2o ARGV``; assert it exits with ``code`` (2: the user's error) printing exactly one
    line on stderr, ``l2o: error: ...`` for status 2; return that line."""
    returned = main(argv)
    err = capsys.readouterr().err
    assert returned == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    if code == 2:
        assert lines[0].startswith("l2o: error: "), err
    return lines[0]
