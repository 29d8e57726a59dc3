"""Build TorchServe's frontend plugins: the Open Inference Protocol v2 routes
(OpenInferenceProtocol.java) and batching that follows the traffic (AdaptiveBatching.java).

    python handler/frontend/build_plugin.py --out-dir plugins

Compiles every .java file here against the installed TorchServe's frontend jar and packs them
with their service registrations into one jar; TorchServe loads the jars of `plugins_path`
(config.properties) at start. Needs javac (a JDK 17; TorchServe's image has one).
Python 3.9 compatible, standard library only: the image builds the plugin with it.
"""

import argparse
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

SOURCES = tuple(sorted(Path(__file__).resolve().parent.glob("*.java")))
JAR = "mymodel-plugins.jar"  # both plugins: the v2 endpoint and adaptive batching
FORMER_JARS = ("mymodel-oip.jar",)  # the same plugins under an earlier name: TorchServe would load them twice
# How TorchServe (java.util.ServiceLoader) finds endpoint plugins on its classpath.
SERVICE = "META-INF/services/org.pytorch.serve.servingsdk.ModelServerEndpoint"


def frontend_jar() -> Path:
    """TorchServe's frontend jar beside its installed Python package."""
    import ts

    jar = Path(ts.__file__).resolve().parent / "frontend" / "model-server.jar"
    if not jar.exists():
        raise RuntimeError(f"{jar} is missing: is torchserve installed?")
    return jar


def plugin_class(source: Path) -> str:
    """The endpoint's fully qualified class name: the source's package and file name."""
    package = re.search(r"^package\s+([\w.]+);", source.read_text(), re.MULTILINE)
    if not package:
        raise ValueError(f"{source} declares no package")
    return f"{package.group(1)}.{source.stem}"


def build_plugin(out_dir: Path, sources: tuple = SOURCES) -> Path:
    """Compile and pack the plugins into out_dir/mymodel-plugins.jar (removing the jar an earlier
    build left there under another name); returns the jar."""
    javac = shutil.which("javac")
    if not javac:
        raise RuntimeError("javac is not installed: the plugin needs a JDK 17 (e.g. apt-get install openjdk-17-jdk)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build:
        classes = Path(build)
        subprocess.run(
            [
                javac,
                "--release",
                "17",
                "-Xlint:all,-processing",
                "-Werror",
                "-cp",
                str(frontend_jar()),
                "-d",
                str(classes),
                *map(str, sources),
            ],
            check=True,
        )
        jar = out_dir / JAR
        for former in FORMER_JARS:
            (out_dir / former).unlink(missing_ok=True)
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as packed:
            for compiled in sorted(classes.rglob("*.class")):
                packed.write(compiled, compiled.relative_to(classes).as_posix())
            packed.writestr(SERVICE, "".join(plugin_class(source) + "\n" for source in sources))
    return jar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, type=Path, help="the plugins_path TorchServe loads jars from")
    args = parser.parse_args()
    print(build_plugin(args.out_dir))


if __name__ == "__main__":
    main()
