"""A catalog image's CPython, run like a local interpreter: how the tests and benchmarks reach the
Pythons that the host has no build of (3.14 and 3.15 from Debian testing, see docs/images.md)."""

from __future__ import annotations

import atexit
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

# The CPythons newer than pyenv offers here, and the catalog image that has each as python3.
NEWER_PYTHONS = {"3.14": "base-py314", "3.15": "base-py315"}
# Passed on into the container when set, with every WORLDTRACE_* variable.
FORWARDED_ENV = ("PYTHONPATH", "PYTHONWARNINGS", "PYTHONHASHSEED", "PYTHONIOENCODING")

_WRAPPER = r"""#!/bin/sh
# python3 of the worldtrace image {image}, as if it were a local interpreter.
switches=$(env | sed -n 's/^\(WORLDTRACE_[A-Z0-9_]*\)=.*/-e \1/p')
exec docker run --rm -i --network none --user "$(id -u):$(id -g)" {volumes} -w "$PWD" \
    -e PYTHONDONTWRITEBYTECODE=1 {env} $switches {tag} python3 "$@"
"""


def image_python(image: str, read_only: Iterable[str | Path] = (), writable: Iterable[str | Path] = ()) -> Path:
    """An executable script that runs ``python3`` of catalog image ``image`` (built now if it is
    missing) in a new container: the given folders mounted at their own paths, the caller's working
    directory (which must be among them), user id and exit status, stdin and stdout passed through,
    no network. Run so, a script, its arguments and its temporary files work as under a local
    interpreter. The script is removed when this process exits."""
    from harvest.docker_client import get_client
    from images.builder import ImageBuilder
    from images.catalog import get_spec

    tag = ImageBuilder(get_client()).ensure(get_spec(image))
    mounts = [(Path(p).resolve(), ":ro") for p in read_only] + [(Path(p).resolve(), "") for p in writable]
    volumes = " ".join(f"-v {shlex.quote(str(p))}:{shlex.quote(str(p))}{mode}" for p, mode in mounts)
    env = " ".join(f"-e {name}" for name in FORWARDED_ENV)
    wrapper = Path(tempfile.mkdtemp(prefix=f"worldtrace-{image}-")) / "python3"
    wrapper.write_text(_WRAPPER.format(image=image, volumes=volumes, env=env, tag=tag))
    wrapper.chmod(0o755)
    atexit.register(shutil.rmtree, wrapper.parent, True)
    return wrapper
