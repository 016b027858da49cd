"""`manage.py test` runs pytest, so there is one test suite whichever way it starts."""

import sys


class PytestTestRunner:
    def __init__(self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument(
            "--keepdb", action="store_true", help="Preserve the test DB between runs."
        )

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        import pytest

        argv = []
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity >= 2:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        argv.extend(test_labels)
        return pytest.main(argv)


if __name__ == "__main__":
    sys.exit(PytestTestRunner().run_tests(sys.argv[1:]))
