"""The suite's check that no test leaves files in the temporary folder (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ("pytester",)


def test_a_test_that_leaves_files_in_the_temporary_folder_fails(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_inner="""
        import subprocess, sys, tempfile

        def test_leaks_a_folder():
            tempfile.mkdtemp()

        def test_keeps_files_under_tmp_path(tmp_path):
            (tmp_path / "kept.nc").write_text("x")
            with tempfile.TemporaryDirectory() as folder:
                (tmp_path / "seen").write_text(folder)

        def test_a_subprocess_leaks_a_file():
            subprocess.run([sys.executable, "-c", "import tempfile; tempfile.mkstemp('.nc')"],
                           check=True)

        def test_after_them_nothing_is_left():
            assert not list(__import__("pathlib").Path(tempfile.gettempdir()).iterdir())
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=2)
    left = r".*the test left 1 entries in the temporary folder, expected none \(write under " \
           r"tmp_path\): tmp\w+"
    result.stdout.re_match_lines([left + "$"])
    result.stdout.re_match_lines([left + r"\.nc$"])


def test_a_passing_test_keeps_no_tmp_path(pytestconfig):
    """pytest removes a passing test's tmp_path at once (a failing one's is kept to look at)."""
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
