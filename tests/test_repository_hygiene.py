"""What the repository carries (issue 28): no large file committed by accident (a wheel, a
database, a profile). A file over the limit has to be named below with the reason it is kept."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1024 * 1024
"""One megabyte: every source, script and document here is far below it (README.md, the largest
of them, is under 100 kB)."""

ALLOWED_OVER_LIMIT = {
    # Swagger UI's bundle as its authors ship it (minified, about 1.7 MB; its version in
    # VERSION beside it), vendored so /docs works with no internet access (api/docs.py).
    "src/otp_service/api/static/swagger-ui/swagger-ui-bundle.js",
}


def tracked_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the check reads `git ls-files`")
    done = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"not a git checkout ({ROOT}): the check reads `git ls-files`")
    return [name for name in done.stdout.split("\0") if name]


def test_no_tracked_file_is_over_one_megabyte() -> None:
    sizes = {name: (ROOT / name).stat().st_size for name in tracked_files() if (ROOT / name).is_file()}
    too_large = {
        name: size for name, size in sizes.items() if size > LIMIT and name not in ALLOWED_OVER_LIMIT
    }
    assert not too_large, f"tracked files over {LIMIT} bytes: {too_large}"


def test_every_allowed_large_file_is_still_tracked_and_large() -> None:
    # An allowance outlives its reason silently otherwise.
    sizes = {name: (ROOT / name).stat().st_size for name in tracked_files() if name in ALLOWED_OVER_LIMIT}
    assert set(sizes) == ALLOWED_OVER_LIMIT
    assert all(size > LIMIT for size in sizes.values()), sizes
